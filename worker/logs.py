"""Build logs: one bounded Redis stream per build, readable live and after the build ends."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import redis

LOG_KEY = "imagebuilder:log:{id}"
END_FIELD = "end"
FOLLOW_BLOCK_MS = 1000


class BuildLog:
    """Appends pull/build/push lines to a build's stream and reads them back, following if asked."""

    def __init__(self, client: redis.Redis, *, max_lines: int, retention_s: int):
        self._redis = client
        self._max_lines = max_lines
        self._retention_s = retention_s

    def append(self, build_id: str, line: str) -> None:
        key = LOG_KEY.format(id=build_id)
        pipe = self._redis.pipeline(transaction=False)
        pipe.xadd(key, {"line": line}, maxlen=self._max_lines, approximate=True)
        pipe.expire(key, self._retention_s)
        pipe.execute()

    def close(self, build_id: str, phase: str) -> None:
        """Mark the end so that followers stop; the marker carries the final phase."""
        key = LOG_KEY.format(id=build_id)
        self._redis.xadd(key, {END_FIELD: phase}, maxlen=self._max_lines, approximate=True)
        self._redis.expire(key, self._retention_s)

    def wait_closed(self, build_id: str, timeout_s: float) -> bool:
        """Block until the end marker is written (True) or `timeout_s` passes (False)."""
        key, last_id = LOG_KEY.format(id=build_id), "0-0"
        deadline = time.monotonic() + timeout_s
        while (remaining_s := deadline - time.monotonic()) > 0:
            block_ms = max(1, int(min(remaining_s * 1000, FOLLOW_BLOCK_MS)))
            for _, entries in self._redis.xread({key: last_id}, block=block_ms, count=1000):
                for entry_id, fields in entries:
                    last_id = entry_id
                    if END_FIELD in fields:
                        return True
        return False

    def lines(self, build_id: str, *, follow: bool = False,
              is_over: Callable[[], bool] = lambda: False) -> Iterator[str]:
        """Every line so far; with `follow`, also new ones until the end marker (or `is_over()`)."""
        key, last_id = LOG_KEY.format(id=build_id), "0-0"
        while True:
            entries = self._read(key, last_id, block=follow)
            for entry_id, fields in entries:
                last_id = entry_id
                if END_FIELD in fields:
                    return
                yield fields.get("line", "")
            if not follow or (not entries and is_over()):
                return

    def _read(self, key: str, last_id: str, *, block: bool) -> list[tuple[str, dict[str, str]]]:
        if not block:
            return [(i, f) for i, f in self._redis.xrange(key, min=f"({last_id}")]
        response = self._redis.xread({key: last_id}, block=FOLLOW_BLOCK_MS, count=500)
        return [(i, f) for _, entries in response for i, f in entries]
