"""Live logs under load, against a real `imagebuilder api` and Redis: followers that hang up free their places at
once, silent stretches get keep-alives, past the bound a follower is told when to come back, hundreds of followers
of one build all see it live, and Redis going away ends a stream cleanly. The builds' records and logs are written
through the store, as a worker writes them: what is under test is the API's fan-out, not a Docker build."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from core.phases import BuildPhase
from core.result import BuildResult, utcnow
from core.stores.wiring import Stores, open_stores
from devstack.services import RedisServer
from devstack.stack import start_api
from producer.livelog import KEEPALIVE, KEEPALIVE_S
from tests.apart import run_apart
from tests.integration.conftest import AUTH

pytestmark = pytest.mark.integration
LIVE_DB = 23  # no worker: every build here is written by the tests themselves
MOST = 4  # IMAGEBUILDER_API_MAX_LOG_STREAMS of the bounded API
HANG_UPS = 20
NOTICED_WITHIN_S = 1.0  # a hang-up frees its place before the next follower has waited this long
FOLLOWERS = 300
LINES = 30
LINES_PER_S = 10
LIVE_WITHIN_S = 2.0  # each line, and the end event, reach every follower within this of their writing
CONNECTING_AT_ONCE = FOLLOWERS  # all in the same moment: a burst the edge queues for Redis, never refuses
STREAM_TIMEOUT = httpx.Timeout(10, read=KEEPALIVE_S + 5)


@pytest.fixture(scope="module")
def bounded(stack) -> Iterator[str]:
    """An API serving at most MOST live logs at once; its base URL."""
    process, url = start_api(stack, "live-logs", LIVE_DB, IMAGEBUILDER_API_MAX_LOG_STREAMS=str(MOST))
    yield url
    process.stop()


@pytest.fixture(scope="module")
def stores(stack) -> Iterator[Stores]:
    opened = open_stores(stack.settings(LIVE_DB))
    yield opened
    opened.close()


def running_build(stores: Stores, first_line: str = "==> pushing") -> BuildResult:
    """A build recorded Running, with one line in its log, as a worker leaves it in the middle of a step."""
    build_id = str(uuid.uuid4())
    build = BuildResult(id=build_id, image=f"registry.example/team/live:{build_id[:8]}", submitted_at=utcnow(),
                        started_at=utcnow(), phase=BuildPhase.RUNNING)
    stores.builds.submit(build, {})
    stores.log.append(build_id, first_line)
    return build


def end(stores: Stores, build: BuildResult, phase: BuildPhase = BuildPhase.SUCCEEDED) -> float:
    """End the build as a worker does (record, then the log's end marker); when the end was written (epoch s)."""
    stores.lifecycle.end(build.model_copy(update={"phase": phase, "finished_at": utcnow()}))
    return time.time()


@contextlib.contextmanager
def following(url: str, build_id: str) -> Iterator[httpx.Response]:
    """One follower on a connection of its own, hanging up when the block ends."""
    with httpx.Client(base_url=url, headers=AUTH, timeout=STREAM_TIMEOUT) as http:
        with http.stream("GET", f"/builds/{build_id}/logs", params={"follow": "true"}) as answer:
            yield answer


def served_after(streams: contextlib.ExitStack, url: str, build_id: str) -> float:
    """Seconds until a follower is served (tried again while refused, for up to NOTICED_WITHIN_S); it stays open
    in `streams`, having read the first line."""
    started = time.monotonic()
    while True:
        attempt = contextlib.ExitStack()
        answer = attempt.enter_context(following(url, build_id))
        if answer.status_code == 200:
            assert next(answer.iter_raw()).startswith(b"data: ")
            streams.callback(attempt.close)
            return time.monotonic() - started
        attempt.close()
        assert answer.status_code == 503 and time.monotonic() - started < NOTICED_WITHIN_S, "still no place"
        time.sleep(0.02)


def test_followers_that_hang_up_free_their_places_at_once(bounded, stores):
    # Given a build that keeps running, and an API that serves at most MOST live logs
    build = running_build(stores)
    waits = []
    # When HANG_UPS followers, MOST at a time, each read the first line and hang up
    for _ in range(HANG_UPS // MOST):
        with contextlib.ExitStack() as open_streams:
            waits += [served_after(open_streams, bounded, build.id) for _ in range(MOST)]
    # Then each group was served right after the one before hung up, the build still running
    assert len(waits) == HANG_UPS and max(waits) < NOTICED_WITHIN_S
    assert stores.builds.get(build.id).phase is BuildPhase.RUNNING
    end(stores, build)


def test_a_silent_stretch_gets_a_keep_alive_comment(bounded, stores):
    # Given a build that has printed one line and then nothing, as a long push does
    build = running_build(stores)
    with following(bounded, build.id) as answer:
        chunks = answer.iter_raw()
        assert next(chunks) == b"data: ==> pushing\n\n"
        quiet_since = time.monotonic()
        # When nothing more is printed, Then a keep-alive comment comes within KEEPALIVE_S (under 15 s)
        assert next(chunks) == KEEPALIVE
        assert time.monotonic() - quiet_since < KEEPALIVE_S + 1 <= 15
        # And the stream goes on: the next line and the end still come on it
        stores.log.append(build.id, "pushed")
        assert next(chunks) == b"data: pushed\n\n"
        end(stores, build)
        assert b"".join(chunks) == b"event: end\ndata: Succeeded\n\n"


def test_past_the_bound_a_follower_is_refused_with_retry_after_then_served_once_streams_end(bounded, stores):
    # Given MOST followers of a running build
    build = running_build(stores)
    with contextlib.ExitStack() as open_streams:
        answers = [open_streams.enter_context(following(bounded, build.id)) for _ in range(MOST)]
        assert all(answer.status_code == 200 for answer in answers)
        # When one more comes, Then it is refused with 503, Retry-After and the reason in the API's JSON shape
        refused = httpx.get(f"{bounded}/builds/{build.id}/logs", params={"follow": "true"}, headers=AUTH)
        assert refused.status_code == 503 and int(refused.headers["retry-after"]) > 0
        assert "IMAGEBUILDER_API_MAX_LOG_STREAMS" in refused.json()["detail"]
        # When the build ends, Then every stream ends with the end event
        end(stores, build, BuildPhase.FAILED)
        for answer in answers:
            assert answer.read().endswith(b"event: end\ndata: Failed\n\n")
    # And the next follower is served the whole log, then the end
    again = httpx.get(f"{bounded}/builds/{build.id}/logs", params={"follow": "true"}, headers=AUTH)
    assert again.status_code == 200 and again.text == "data: ==> pushing\n\nevent: end\ndata: Failed\n\n"


@dataclass
class Followed:
    """What one follower received: each line with when it arrived, and the end event's data and arrival (epoch s)."""

    lines: list[tuple[str, float]] = field(default_factory=list)
    end: str | None = None
    end_at: float = 0.0

    def take(self, events: list[bytes], now: float) -> None:
        for event in events:
            if event.startswith(b"event: end\ndata: "):
                self.end, self.end_at = event.removeprefix(b"event: end\ndata: ").decode(), now
            elif event.startswith(b"data: "):
                self.lines.append((event.removeprefix(b"data: ").decode(), now))


async def follow_async(http: httpx.AsyncClient, build_id: str, connecting: asyncio.Semaphore,
                       connected: list[int]) -> Followed:
    followed, buffer = Followed(), b""
    async with contextlib.AsyncExitStack() as stack:
        async with connecting:
            answer = await stack.enter_async_context(
                http.stream("GET", f"/builds/{build_id}/logs", params={"follow": "true"}))
        assert answer.status_code == 200, answer.status_code
        connected.append(1)
        async for chunk in answer.aiter_raw():
            *events, buffer = (buffer + chunk).split(b"\n\n")
            followed.take(events, time.time())
    return followed


def write_log(stores: Stores, build: BuildResult) -> float:
    """LINES lines at LINES_PER_S, each saying when it was written, then the end; when the end was written."""
    for i in range(LINES):
        stores.log.append(build.id, f"line {i} written at {time.time():.6f}")
        time.sleep(1 / LINES_PER_S)
    return end(stores, build)


async def many_followers(url: str, stores: Stores, build: BuildResult) -> tuple[list[Followed], float]:
    connecting, connected = asyncio.Semaphore(CONNECTING_AT_ONCE), []
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=STREAM_TIMEOUT, limits=limits) as http:
        followers = [asyncio.create_task(follow_async(http, build.id, connecting, connected))
                     for _ in range(FOLLOWERS)]
        while len(connected) < FOLLOWERS:
            assert not any(task.done() for task in followers), [t.exception() for t in followers if t.done()]
            await asyncio.sleep(0.05)
        ended_at = await asyncio.to_thread(write_log, stores, build)
        return await asyncio.gather(*followers), ended_at


def test_hundreds_of_followers_of_one_build_all_see_it_live_and_its_end_within_two_seconds(stack, stores):
    # Given an API with the default bound, and FOLLOWERS followers of one running build
    process, url = start_api(stack, "live-logs-many", LIVE_DB)
    try:
        build = running_build(stores, first_line="started")
        # When the build writes LINES lines at LINES_PER_S, then ends
        everyone, ended_at = run_apart(many_followers(url, stores, build))
    finally:
        process.stop()
    # Then every follower got every line in order, each within LIVE_WITHIN_S of its writing
    for followed in everyone:
        lines = [line.split(" written at ")[0] for line, _ in followed.lines]
        assert lines == ["started", *(f"line {i}" for i in range(LINES))]
        delays = [at - float(line.rsplit(" ", 1)[1]) for line, at in followed.lines[1:]]
        assert max(delays) < LIVE_WITHIN_S, max(delays)
    # And the end event, each within LIVE_WITHIN_S of the build's end
    assert all(followed.end == "Succeeded" for followed in everyone)
    latest = max(followed.end_at for followed in everyone) - ended_at
    assert latest < LIVE_WITHIN_S, latest


def test_redis_going_away_ends_a_live_log_cleanly(stack, tmp_path):
    # Given an API on a Redis of its own, and a follower of a running build there
    redis_server = RedisServer(tmp_path / "redis").start()
    url_of_redis = redis_server.url()
    process, url = start_api(stack, "live-logs-redis-away", IMAGEBUILDER_REDIS_URL=url_of_redis,
                             IMAGEBUILDER_LIVE_LOG_PATIENCE_S="1")
    own = open_stores(stack.settings(IMAGEBUILDER_REDIS_URL=url_of_redis))
    try:
        build = running_build(own)
        with following(url, build.id) as answer:
            chunks = answer.iter_raw()
            assert next(chunks) == b"data: ==> pushing\n\n"
            # When Redis stops, for longer than the live log waits for it (IMAGEBUILDER_LIVE_LOG_PATIENCE_S)
            redis_server.stop()
            # Then the stream ends, properly framed, with an event saying why
            rest = b"".join(chunks)
        assert rest.startswith(b"event: unavailable\ndata: cannot reach Redis at IMAGEBUILDER_REDIS_URL")
        assert "Traceback" not in process.log_path.read_text()
    finally:
        own.close()
        process.stop()
        redis_server.stop()
