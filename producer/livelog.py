"""Live build logs as server-sent events: one reader per followed build and API process, shared by its followers."""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
from collections.abc import AsyncGenerator, Callable, Iterator
from contextlib import contextmanager

from fastapi.responses import JSONResponse, StreamingResponse
from starlette.types import Receive, Scope, Send

from config.settings import DEFAULT_LIVE_LOG_PATIENCE_S, Settings
from core.errors import StoreUnavailable
from core.stores.builds import unknown_build
from core.stores.connection import store_errors
from core.stores.logs import LiveBuildLog, LogChunk, live_build_log

logger = logging.getLogger(__name__)

SSE = "text/event-stream"
END_EVENT = "end"  # its data is the build's final phase
UNAVAILABLE_EVENT = "unavailable"  # the stream ends without the final phase: Redis went away, or the record did
# Under the 15 s idle timeout some proxies and clients have, so a silent step (a long push) never drops a stream.
KEEPALIVE_S = 10.0
KEEPALIVE = b": keep-alive\n\n"  # a comment: EventSource ignores it
RETRY_AFTER_S = 5
# After a read that found lines, a reader waits this long before the next: a fast log (apt prints hundreds of lines
# a second) reaches each follower in at most 10 sends a second, not one per line, for 0.1 s more latency.
BATCH_S = 0.1
# A reader that cannot reach Redis tries again for IMAGEBUILDER_LIVE_LOG_PATIENCE_S (a failover takes seconds): its
# followers see a pause, kept open by keep-alives, rather than the stream's end.
READ_RETRY_S = 1.0
MAX_SEND_BYTES = 64 << 10  # one send to one follower; a slow one holds at most this (and its socket's buffer)
# nginx buffers a proxied answer unless told not to, which would hold a live log back until the build's end.
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_SSE_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def sse_event(data: str, event: str | None = None) -> str:
    """One server-sent event. Every line of `data` is a `data:` field of its own, so no text in it (a log line
    saying `event: end`, say) can ever become a field, or end the event early."""
    fields = [f"event: {event}"] if event else []
    fields += [f"data: {part}" for part in _SSE_LINE_BREAK.split(data)]
    return "\n".join(fields) + "\n\n"


class Places:
    """The live logs one API process serves at once (IMAGEBUILDER_API_MAX_LOG_STREAMS); past them, 503. A plain
    count: only the event loop's one thread touches it."""

    def __init__(self, most: int):
        self.most = most
        self.taken = 0

    def take(self) -> bool:
        if self.taken >= self.most:
            return False
        self.taken += 1
        return True

    def give_back(self) -> None:
        self.taken -= 1

    def refusal(self) -> JSONResponse:
        detail = (f"the API already serves {self.most} live log streams (IMAGEBUILDER_API_MAX_LOG_STREAMS, per "
                  f"process); try again in {RETRY_AFTER_S} s")
        return JSONResponse({"detail": detail}, status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)})


class BuildFeed:
    """One build's log as this process has read it, shared by all of the build's followers: its lines as events,
    then the event that ends the stream. Positions count lines from the log's first; at most twice `max_lines`
    events are kept (the stream itself keeps about `max_lines`), and a follower that falls further behind skips
    to the oldest kept."""

    def __init__(self, max_lines: int):
        self._max_lines = max_lines
        self._events: list[bytes] = []
        self._first = 0  # the position of _events[0]
        self._news = asyncio.Event()
        self.ending: bytes | None = None
        self.followers = 0
        self.reading = True

    @property
    def total(self) -> int:
        return self._first + len(self._events)

    def add(self, lines: list[str]) -> None:
        if lines:
            self._events.extend(sse_event(line).encode() for line in lines)
            self._trim()
            self._announce()

    def end(self, event: str) -> None:
        self.ending = event.encode()
        self._announce()

    def since(self, seen: int) -> tuple[bytes, int]:
        """The events after position `seen`, joined, up to about MAX_SEND_BYTES, and the position after them: a
        follower far behind catches up in sends of bounded size, each waiting for the one before to be taken."""
        start = max(seen, self._first)
        chunk, size = [], 0
        for event in itertools.islice(self._events, start - self._first, None):
            if chunk and size + len(event) > MAX_SEND_BYTES:
                break
            chunk.append(event)
            size += len(event)
        return b"".join(chunk), start + len(chunk)

    async def news_after(self, seen: int, timeout_s: float) -> bool:
        """Wait until there is more than `seen` lines or an ending (True), or `timeout_s` passes (False)."""
        try:
            async with asyncio.timeout(timeout_s):
                while self.total <= seen and self.ending is None:
                    await self._news.wait()
        except TimeoutError:
            return False
        return True

    def _trim(self) -> None:
        # Dropping down to `max_lines` once twice as many are kept makes adding O(1), amortised.
        if len(self._events) > 2 * self._max_lines:
            dropped = len(self._events) - self._max_lines
            del self._events[:dropped]
            self._first += dropped

    def _announce(self) -> None:
        self._news.set()
        self._news = asyncio.Event()


class LiveLogs:
    """The live logs one API process serves: at most `most` followers at once, each build's log read by one task
    that all of its followers share, from its first line, until it ends or its last follower has gone."""

    def __init__(self, open_log: Callable[[], LiveBuildLog], *, most: int, max_lines: int,
                 keepalive_s: float = KEEPALIVE_S, batch_s: float = BATCH_S,
                 read_patience_s: float = DEFAULT_LIVE_LOG_PATIENCE_S):
        self._open_log = open_log
        self._places = Places(most)
        self._max_lines = max_lines
        self._keepalive_s = keepalive_s
        self._batch_s = batch_s
        self._read_patience_s = read_patience_s
        self._feeds: dict[str, BuildFeed] = {}
        self._checks: dict[str, asyncio.Future[bool]] = {}  # whether a build is known, one look-up at a time
        self._readers: set[asyncio.Task[None]] = set()  # the loop holds tasks only weakly
        self._bound: tuple[asyncio.AbstractEventLoop, LiveBuildLog] | None = None

    @property
    def followed_builds(self) -> int:
        return len(self._feeds)

    @property
    def serving(self) -> int:
        """Live logs being sent now."""
        return self._places.taken

    async def follow(self, build_id: str) -> LiveLogResponse:
        """The build's live log (UnknownBuild for an id nobody submitted)."""
        if not await self._known(build_id):
            raise unknown_build(build_id)
        return LiveLogResponse(self._events(build_id), self._places)

    async def _known(self, build_id: str) -> bool:
        """Whether the build has a record: a build followed here already does; followers arriving together share
        one look-up."""
        if build_id in self._feeds:
            return True
        if build_id not in self._checks:
            check = self._checks[build_id] = asyncio.ensure_future(self._has_record(build_id))
            check.add_done_callback(lambda _: self._checks.pop(build_id, None))
        return await asyncio.shield(self._checks[build_id])  # a follower that hangs up cancels only its own wait

    async def _has_record(self, build_id: str) -> bool:
        with store_errors():
            return await self._log().record(build_id) is not None

    async def _events(self, build_id: str) -> AsyncGenerator[bytes, None]:
        """A follower's stream: the lines so far, then each new batch; a keep-alive comment after `keepalive_s`
        without one; the ending last."""
        with self._following(build_id) as feed:
            seen = 0
            while True:
                news, seen = feed.since(seen)
                if news:
                    yield news
                elif feed.ending is not None:
                    yield feed.ending
                    return
                elif not await feed.news_after(seen, self._keepalive_s):
                    yield KEEPALIVE

    @contextmanager
    def _following(self, build_id: str) -> Iterator[BuildFeed]:
        feed = self._feeds.get(build_id) or self._start(build_id)
        feed.followers += 1
        try:
            yield feed
        finally:
            feed.followers -= 1
            self._forget_if_idle(build_id, feed)

    def _start(self, build_id: str) -> BuildFeed:
        feed = self._feeds[build_id] = BuildFeed(self._max_lines)
        reader = asyncio.create_task(self._read(build_id, feed), name=f"live log {build_id}")
        self._readers.add(reader)
        reader.add_done_callback(self._readers.discard)
        return feed

    def _forget_if_idle(self, build_id: str, feed: BuildFeed) -> None:
        """Drop a feed that nobody follows and nothing reads into: a later follower starts afresh."""
        if feed.followers == 0 and not feed.reading and self._feeds.get(build_id) is feed:
            del self._feeds[build_id]

    async def _read(self, build_id: str, feed: BuildFeed) -> None:
        """Read the build's log into its feed until it ends, or its last follower has gone (noticed within a read's
        wait, FOLLOW_BLOCK_MS: a read is never cancelled half-way, which would cost its connection)."""
        after = "0-0"
        try:
            while feed.followers and feed.ending is None:
                read_before = feed.total
                after = await self._read_patiently(build_id, feed, after)
                if feed.total > read_before:
                    await asyncio.sleep(self._batch_s)
        except StoreUnavailable as error:
            self._retire(build_id, feed, sse_event(str(error), event=UNAVAILABLE_EVENT))
        except Exception:  # a bug must not leave the followers waiting for ever
            logger.exception("reading the live log of build %s failed", build_id)
            self._retire(build_id, feed, sse_event("internal error", event=UNAVAILABLE_EVENT))
        finally:
            feed.reading = False
            self._forget_if_idle(build_id, feed)

    def _retire(self, build_id: str, feed: BuildFeed, ending: str) -> None:
        """End a feed that cannot go on (Redis away): its followers get the ending, and the next follower starts
        a fresh reader rather than that ending."""
        feed.end(ending)
        if self._feeds.get(build_id) is feed:
            del self._feeds[build_id]

    async def _read_patiently(self, build_id: str, feed: BuildFeed, after: str) -> str:
        """`_read_once`, tried again for `read_patience_s` while Redis is away."""
        deadline = asyncio.get_running_loop().time() + self._read_patience_s
        while True:
            try:
                return await self._read_once(build_id, feed, after)
            except StoreUnavailable:
                if asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(min(READ_RETRY_S, self._read_patience_s))

    async def _read_once(self, build_id: str, feed: BuildFeed, after: str) -> str:
        """One read into the feed, waiting a while for news; the entry to read on after."""
        with store_errors():
            chunk = await self._log().read(build_id, after)
            ending = await self._ending_without_marker(build_id, after) if _quiet(chunk) else None
        feed.add(chunk.lines)
        if chunk.end is not None:
            feed.end(sse_event(chunk.end, event=END_EVENT))
        elif ending is not None:
            feed.end(ending)
        return chunk.after

    async def _ending_without_marker(self, build_id: str, after: str) -> str | None:
        """The ending of a build whose record has ended though its log, read to its end, has no marker (the log
        expired before the record, or an older version wrote it), or whose record has gone; None while the
        build goes on. An end writes record and marker at once: a read made after the record says it ended sees
        the marker, if there is one."""
        record = await self._log().record(build_id)
        if record is None:
            return sse_event(f"build {build_id} has no record any more (it expired)", event=UNAVAILABLE_EVENT)
        if not record.phase.is_final or not _quiet(await self._log().read(build_id, after, block_ms=1)):
            return None
        return sse_event(record.phase.value, event=END_EVENT)

    def _log(self) -> LiveBuildLog:
        """The store's reader for the running event loop: made once in an API process, which runs one loop (an
        asyncio Redis client cannot move between loops, and a TestClient starts one of its own)."""
        loop = asyncio.get_running_loop()
        if self._bound is None or self._bound[0] is not loop:
            self._bound = (loop, self._open_log())
        return self._bound[1]


class LiveLogResponse(StreamingResponse):
    """A follower's event stream, holding one of the process's places for exactly as long as it is sent: given
    back when the log ends, and at once when the client hangs up (Starlette then cancels the sending; under an
    ASGI 2.4 server, at the next send, a keep-alive at the latest); the stream's generator is closed here, not left
    for the garbage collector."""

    def __init__(self, events: AsyncGenerator[bytes, None], places: Places):
        super().__init__(events, media_type=SSE, headers=STREAM_HEADERS)
        self._events = events
        self._places = places

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._places.take():
            await self._events.aclose()
            await self._places.refusal()(scope, receive, send)
            return
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._places.give_back()
            await self._events.aclose()


def live_logs(settings: Settings) -> LiveLogs:
    """The API process's live logs, reading through an asyncio Redis client of their own."""
    most = settings.api_max_log_streams
    return LiveLogs(lambda: live_build_log(settings.redis_target, most_readers=most), most=most,
                    max_lines=settings.log_max_lines, read_patience_s=settings.live_log_patience_s)


def _quiet(chunk: LogChunk) -> bool:
    return not chunk.lines and chunk.end is None
