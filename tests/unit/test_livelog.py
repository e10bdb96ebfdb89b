"""The live log fan-out's pure pieces (producer/livelog.py), over an in-memory stand-in for the log in Redis, each
follower served through the ASGI interface as uvicorn serves it."""

import asyncio
import json

import pytest
import redis

from core.errors import UnknownBuild
from core.phases import BuildPhase
from core.result import BuildResult, utcnow
from core.stores.logs import LogChunk
from producer.livelog import (
    KEEPALIVE,
    MAX_SEND_BYTES,
    BuildFeed,
    LiveLogs,
    Places,
    sse_event,
)
from tests.apart import run_apart

QUICK_S = 0.05  # the stand-in's longest wait for news, in place of a read's second
SCOPE = {"type": "http", "asgi": {"spec_version": "2.3"}}  # what uvicorn's HTTP/1.1 servers say
END = b"event: end\ndata: Succeeded\n\n"


class MemoryLog:
    """A build's log and record as LiveBuildLog reads them: lines, then maybe the end marker; entry ids are
    positions. It counts the most reads waiting at once, and fails as Redis going away does when told to."""

    def __init__(self, phase: BuildPhase = BuildPhase.RUNNING, finished_at=None):
        self.lines: list[str] = []
        self.end: str | None = None
        self.failing = False
        self.waiting = self.most_waiting = 0
        self.look_ups = 0
        self.record_: BuildResult | None = BuildResult(id="b", image="r/x:1", submitted_at=utcnow(), phase=phase,
                                                       finished_at=finished_at)

    async def read(self, build_id: str, after: str, block_ms: int = 1000) -> LogChunk:
        if self.failing:
            raise redis.ConnectionError("gone")
        start = int(after.split("-")[0])
        if start >= len(self.lines) and self.end is None:
            await self._wait()
        return LogChunk(self.lines[start:], f"{len(self.lines)}-0", self.end)

    async def record(self, build_id: str) -> BuildResult | None:
        self.look_ups += 1
        await asyncio.sleep(QUICK_S)
        return self.record_

    async def _wait(self) -> None:
        self.waiting += 1
        self.most_waiting = max(self.most_waiting, self.waiting)
        await asyncio.sleep(QUICK_S)
        self.waiting -= 1


def live(log: MemoryLog, most: int = 10, **kwargs) -> LiveLogs:
    return LiveLogs(lambda: log, most=most, max_lines=100, **kwargs)


class Client:
    """One follower over ASGI: what it was sent, and a hang-up it can make."""

    def __init__(self):
        self.sent: list[dict] = []
        self.body = b""
        self.hung_up = asyncio.Event()

    async def receive(self) -> dict:
        await self.hung_up.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict) -> None:
        self.sent.append(message)
        self.body += message.get("body", b"")

    async def follow(self, logs: LiveLogs, build_id: str = "b", *, hang_up_at: bytes | None = None) -> bytes:
        """Follow until the stream ends, or until `hang_up_at` has arrived and the client hangs up."""
        watching = asyncio.create_task(self._hang_up_at(hang_up_at)) if hang_up_at else None
        await (await logs.follow(build_id))(SCOPE, self.receive, self.send)
        if watching:
            watching.cancel()
        return self.body

    async def _hang_up_at(self, text: bytes) -> None:
        while text not in self.body:
            await asyncio.sleep(QUICK_S / 5)
        self.hung_up.set()


def test_places_are_bounded_and_the_refusal_says_when_to_come_back():
    # Given room for one live log, taken
    places = Places(1)
    assert places.take()
    # Then the next is refused: 503, Retry-After, and the JSON detail naming the setting
    assert not places.take()
    refusal = places.refusal()
    assert refusal.status_code == 503 and refusal.headers["retry-after"] == "5"
    assert "IMAGEBUILDER_API_MAX_LOG_STREAMS" in json.loads(refusal.body)["detail"]
    # And once it is given back, the place can be taken again
    places.give_back()
    assert places.take()


def test_a_feed_gives_a_late_follower_every_line_from_the_first():
    async def scenario():
        # Given a feed with two lines, read by an early follower, then a third line
        feed = BuildFeed(max_lines=100)
        feed.add(["one", "two"])
        early, seen = feed.since(0)
        feed.add(["three"])
        # Then the early follower gets only what is new to it, a late one everything, each line an event
        assert early == b"data: one\n\ndata: two\n\n"
        assert feed.since(seen) == (b"data: three\n\n", 3)
        assert feed.since(0)[0] == early + b"data: three\n\n"

    run_apart(scenario())


def test_a_feed_keeps_at_most_twice_its_bound_and_a_laggard_skips_to_the_oldest_kept():
    async def scenario():
        # Given a feed bounded to 10 lines that is given 50
        feed = BuildFeed(max_lines=10)
        for start in range(0, 50, 5):
            feed.add([f"line {i}" for i in range(start, start + 5)])
            # Then it never holds more than 20
            assert feed.since(0)[0].count(b"\n\n") <= 20
        # And a follower still at line 3 skips to the oldest kept, up to the newest
        news, seen = feed.since(3)
        assert seen == 50 and news.endswith(b"data: line 49\n\n") and b"data: line 3\n\n" not in news

    run_apart(scenario())


def test_waiting_for_news_wakes_at_new_lines_or_the_end_and_times_out_otherwise():
    async def scenario():
        feed = BuildFeed(max_lines=10)
        assert not await feed.news_after(0, QUICK_S)
        asyncio.get_running_loop().call_later(QUICK_S, feed.add, ["x"])
        assert await feed.news_after(0, 5)
        asyncio.get_running_loop().call_later(QUICK_S, feed.end, sse_event("Succeeded", event="end"))
        assert await feed.news_after(1, 5) and feed.ending == END

    run_apart(scenario())


def test_followers_of_one_build_share_one_reader_and_each_gets_every_line_then_the_end():
    async def scenario():
        # Given a build with two lines, and a follower, then a second one joining later
        log = MemoryLog()
        log.lines = ["a", "b"]
        logs = live(log)
        early = asyncio.create_task(Client().follow(logs))
        await asyncio.sleep(QUICK_S * 2)
        late = asyncio.create_task(Client().follow(logs))
        await asyncio.sleep(QUICK_S * 2)
        # Then one reader serves both
        assert logs.followed_builds == 1 and logs.serving == 2 and log.most_waiting == 1
        # When a line comes, then the end
        log.lines.append("c")
        log.end = "Succeeded"
        # Then each follower got every line from the first, then the end event
        expected = b"data: a\n\ndata: b\n\ndata: c\n\n" + END
        assert await early == expected and await late == expected
        # And once they have gone, nothing is held for the build
        await asyncio.sleep(QUICK_S * 2)
        assert logs.serving == 0 and logs.followed_builds == 0

    run_apart(scenario())


def test_a_quiet_stream_sends_keep_alive_comments():
    async def scenario():
        # Given a build whose log says nothing, followed with keep-alives every few hundredths of a second
        logs = live(MemoryLog(), keepalive_s=QUICK_S * 3)
        # Then keep-alive comments arrive
        return await asyncio.wait_for(Client().follow(logs, hang_up_at=KEEPALIVE * 2), 5)

    assert run_apart(scenario()).startswith(KEEPALIVE * 2)


def test_redis_going_away_ends_the_stream_with_an_unavailable_event():
    async def scenario():
        # Given a follower that has had the first line
        log = MemoryLog()
        log.lines = ["a"]
        following = asyncio.create_task(Client().follow(live(log, read_patience_s=QUICK_S)))
        await asyncio.sleep(QUICK_S * 2)
        # When Redis goes away for longer than the reader's patience, Then the stream ends with the reason
        log.failing = True
        return await asyncio.wait_for(following, 5)

    assert run_apart(scenario()).startswith(b"data: a\n\nevent: unavailable\ndata: cannot reach Redis")


def test_redis_away_for_less_than_the_readers_patience_is_a_pause_in_the_stream_not_its_end():
    async def scenario():
        # Given a follower that has had the first line
        log = MemoryLog()
        log.lines = ["a"]
        following = asyncio.create_task(Client().follow(live(log, read_patience_s=2.0)))
        await asyncio.sleep(QUICK_S * 2)
        # When Redis goes away (a failover) and comes back within the reader's patience with more lines and the end
        log.failing = True
        await asyncio.sleep(0.5)
        log.lines, log.failing = ["a", "b"], False
        log.end = "Succeeded"
        return await asyncio.wait_for(following, 5)

    # Then the same stream goes on to the end
    assert run_apart(scenario()) == b"data: a\n\ndata: b\n\n" + END


class StuckClient(Client):
    """A follower whose connection takes its first lines, then stops taking anything until released."""

    def __init__(self):
        super().__init__()
        self.release = asyncio.Event()

    async def send(self, message: dict) -> None:
        if self.body:
            await self.release.wait()
        await super().send(message)


def test_after_redis_came_back_a_new_follower_gets_a_fresh_reader_not_the_old_ending():
    async def scenario():
        # Given a follower stuck on a slow connection, still attached when Redis goes away and its feed ends
        log = MemoryLog()
        log.lines = ["a"]
        logs = live(log, read_patience_s=QUICK_S)
        stuck = StuckClient()
        lingering = asyncio.create_task(stuck.follow(logs))
        await asyncio.sleep(QUICK_S * 2)
        log.failing = True
        await asyncio.sleep(QUICK_S * 3)
        # When Redis is back and a new follower comes
        log.failing, log.end = False, "Succeeded"
        fresh = await asyncio.wait_for(Client().follow(logs), 5)
        stuck.release.set()
        await lingering
        return fresh

    assert run_apart(scenario()) == b"data: a\n\n" + END


def test_a_follower_far_behind_catches_up_in_sends_of_bounded_size():
    feed = BuildFeed(max_lines=100_000)
    feed.add(["x" * 1000] * 1000)
    sends, seen = [], 0
    while (news := feed.since(seen))[0]:
        chunk, seen = news
        sends.append(len(chunk))
    assert seen == 1000 and sum(sends) == 1000 * len(sse_event("x" * 1000)) and max(sends) <= MAX_SEND_BYTES


def test_a_build_whose_record_ended_though_its_log_has_no_end_marker_ends_with_its_phase():
    log = MemoryLog(BuildPhase.FAILED, finished_at=utcnow().replace(year=2000))
    assert run_apart(asyncio.wait_for(Client().follow(live(log)), 5)) == b"event: end\ndata: Failed\n\n"


def test_a_follower_that_hangs_up_gives_back_its_place_and_its_share_at_once():
    async def scenario():
        # Given the one place taken by a follower of a running build
        logs = live(MemoryLog(), most=1)
        client = Client()
        following = asyncio.create_task(client.follow(logs))
        await asyncio.sleep(QUICK_S * 2)
        assert logs.serving == 1 and logs.followed_builds == 1
        # When it hangs up
        client.hung_up.set()
        await asyncio.wait_for(following, 1)
        # Then its place is free at once, and the build's reader stops within one of its reads
        assert logs.serving == 0
        await asyncio.sleep(QUICK_S * 2)
        assert logs.followed_builds == 0
        # And its stream carried the headers that keep proxies from buffering it
        headers = dict(client.sent[0]["headers"])
        assert headers[b"content-type"].startswith(b"text/event-stream")
        assert headers[b"cache-control"] == b"no-cache" and headers[b"x-accel-buffering"] == b"no"

    run_apart(scenario())


@pytest.mark.parametrize("most", [1, 3])
def test_past_the_bound_a_follower_gets_503_and_no_stream_is_started(most):
    async def scenario():
        # Given every place taken by followers
        logs = live(MemoryLog(), most=most)
        clients = [Client() for _ in range(most)]
        following = [asyncio.create_task(c.follow(logs)) for c in clients]
        await asyncio.sleep(QUICK_S * 2)
        # When one more comes, Then it is refused with 503 and Retry-After
        refused = Client()
        await refused.follow(logs)
        assert refused.sent[0]["status"] == 503 and (b"retry-after", b"5") in refused.sent[0]["headers"]
        assert logs.serving == most
        # And once one of them hangs up, the next is served
        clients[0].hung_up.set()
        await following[0]
        served = Client()
        served.hung_up.set()  # as soon as it is answered
        await asyncio.wait_for(served.follow(logs), 1)
        assert served.sent[0]["status"] == 200
        for client, task in zip(clients[1:], following[1:]):
            client.hung_up.set()
            await task

    run_apart(scenario())


def test_followers_arriving_together_share_one_look_up_of_the_build():
    async def scenario():
        # Given 50 followers of one build arriving at once
        log = MemoryLog()
        logs = live(log)
        answers = await asyncio.gather(*(logs.follow("b") for _ in range(50)))
        # Then the build's record was looked up once for all of them
        assert len(answers) == 50 and log.look_ups == 1
        # And a later arrival looks it up again
        await logs.follow("b")
        assert log.look_ups == 2

    run_apart(scenario())


def test_an_unknown_build_is_refused_before_any_stream():
    log = MemoryLog()
    log.record_ = None
    with pytest.raises(UnknownBuild):
        run_apart(live(log).follow("nobody"))
