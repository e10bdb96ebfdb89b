"""A build's log in Redis: one bounded stream, written by the worker, read whole or followed live (by the CLI's
thread, or by the API's event loop), and closed by an end marker once everything about the build's end is in place."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import redis
import redis.asyncio

from config.redis_target import RedisTarget
from core.result import BuildResult
from core.stores.builds import RECORD_KEY
from core.stores.connection import async_redis_client

LOG_KEY = "imagebuilder:log:{id}"  # stream: {line} entries, then one {end: final phase} (with the last line, if any)
LOG_LINE_FIELD = "line"
LOG_END_FIELD = "end"  # the end marker's: the final phase
LOG_RESULT_FIELD = "result"  # the end marker's too: the final record, so a waiter needs no other read
FOLLOW_BLOCK_MS = 1000
LIVE_READ_ENTRIES = 1000  # per XREAD of a live reader: a long log arrives in a few round trips
LIVE_SHORT_READS = 32  # connections beside the live readers' own, for the records checked as followers come


class BuildLog:
    """A build's log: one bounded Redis stream, readable live and after the build ends. Its end marker is
    written last, once everything about the build's end is in place."""

    def __init__(self, client: redis.Redis, *, max_lines: int, retention_s: int):
        self._redis = client
        self._max_lines = max_lines
        self._retention_s = retention_s

    def append(self, build_id: str, line: str) -> None:
        self._add(build_id, {LOG_LINE_FIELD: line})

    def _add(self, build_id: str, fields: dict[str, str]) -> None:
        pipe = self._redis.pipeline(transaction=False)
        self._queue(pipe, build_id, fields)
        pipe.execute()

    def _queue(self, pipe: redis.client.Pipeline, build_id: str, fields: dict[str, str]) -> None:
        key = LOG_KEY.format(id=build_id)
        pipe.xadd(key, fields, maxlen=self._max_lines, approximate=True)
        pipe.expire(key, self._retention_s)

    def wait_end(self, build_id: str, after: str, timeout_s: float) -> tuple[BuildResult | None, str]:
        """Wait up to `timeout_s` for the end marker, reading on from entry `after` ("0-0": the first): the final
        record the marker carries, or None; and the entry to read on after."""
        key, deadline = LOG_KEY.format(id=build_id), time.monotonic() + timeout_s
        while (remaining_s := deadline - time.monotonic()) > 0:
            block_ms = max(1, int(min(remaining_s * 1000, FOLLOW_BLOCK_MS)))
            for _, entries in self._redis.xread({key: after}, block=block_ms, count=LIVE_READ_ENTRIES):
                for entry_id, fields in entries:
                    after = entry_id
                    if LOG_RESULT_FIELD in fields:
                        return BuildResult.model_validate_json(fields[LOG_RESULT_FIELD]), after
        return None, after

    def lines(self, build_id: str, *, follow: bool = False,
              is_over: Callable[[], bool] = lambda: False) -> Iterator[str]:
        """Every line so far; with `follow`, also new ones until the end marker (or `is_over()`)."""
        key, last_id = LOG_KEY.format(id=build_id), "0-0"
        while True:
            entries = self._read(key, last_id, block=follow)
            for entry_id, fields in entries:
                last_id = entry_id
                if _has_line(fields):
                    yield fields.get(LOG_LINE_FIELD, "")
                if LOG_END_FIELD in fields:
                    return
            if not follow or (not entries and is_over()):
                return

    def _read(self, key: str, last_id: str, *, block: bool) -> list[tuple[str, dict[str, str]]]:
        if not block:
            return [(i, f) for i, f in self._redis.xrange(key, min=f"({last_id}")]
        response = self._redis.xread({key: last_id}, block=FOLLOW_BLOCK_MS, count=500)
        return [(i, f) for _, entries in response for i, f in entries]

    def forget(self, build_ids: list[str]) -> None:
        if build_ids:
            self._redis.delete(*[LOG_KEY.format(id=i) for i in build_ids])


@dataclass(frozen=True)
class LogChunk:
    """What one read of a build's log found: its lines, the entry to read on after, and the final phase if the end
    marker was among them (nothing after it is read)."""

    lines: list[str]
    after: str
    end: str | None = None


class LiveBuildLog:
    """A build's log and record read without holding a thread (redis.asyncio), for the API's live followers. Its
    client belongs to the event loop that first uses it."""

    def __init__(self, client: redis.asyncio.Redis):
        self._redis = client

    async def read(self, build_id: str, after: str, *, block_ms: int = FOLLOW_BLOCK_MS) -> LogChunk:
        """The entries after entry `after` ("0-0" for the first), waiting up to `block_ms` for one to come."""
        key = LOG_KEY.format(id=build_id)
        response = await self._redis.xread({key: after}, block=block_ms, count=LIVE_READ_ENTRIES)
        return _chunk([entry for _, entries in response for entry in entries], after)

    async def record(self, build_id: str) -> BuildResult | None:
        raw = await self._redis.get(RECORD_KEY.format(id=build_id))
        return BuildResult.model_validate_json(raw) if raw else None


def _chunk(entries: list[tuple[str, dict[str, str]]], after: str) -> LogChunk:
    lines = []
    for entry_id, fields in entries:
        after = entry_id
        if _has_line(fields):
            lines.append(fields.get(LOG_LINE_FIELD, ""))
        if LOG_END_FIELD in fields:
            return LogChunk(lines, after, fields[LOG_END_FIELD])
    return LogChunk(lines, after)


def _has_line(fields: dict[str, str]) -> bool:
    """Every entry is a line but the end marker, which carries the build's last line when it has one."""
    return LOG_LINE_FIELD in fields or LOG_END_FIELD not in fields


def live_build_log(target: RedisTarget, *, most_readers: int) -> LiveBuildLog:
    """A LiveBuildLog on an asyncio client of its own: each followed build's reader holds a connection for its
    blocking reads, so the pool has room for `most_readers` of them and a few short reads more."""
    return LiveBuildLog(async_redis_client(target, max_connections=most_readers + LIVE_SHORT_READS))
