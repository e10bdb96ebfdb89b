"""Throttling guesses: failed credentials (API and webhook tokens, console sign-ins) are counted per client address
in Redis, so every API process shares the count; a client past the bound is answered 429 with Retry-After until
its window ends, whatever it sends, and no other client is slowed."""

from __future__ import annotations

import redis
import redis.asyncio

from worker.stores import store_errors

FAILURES_KEY = "imagebuilder:auth-failures:{client}"  # failed credentials from one address in the current window

# Count a failure; the first one opens the window. Returns the count and the seconds the window has left.
_COUNT = """
local failures = redis.call('INCR', KEYS[1])
if failures == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return {failures, redis.call('TTL', KEYS[1])}
"""


class Throttle:
    """At most `most` failed credentials per client address in `window_s` seconds."""

    def __init__(self, client: redis.Redis, async_client: redis.asyncio.Redis, *, most: int, window_s: int):
        self._most = most
        self._window_s = window_s
        self._redis = client
        self._async_redis = async_client
        self._count = client.register_script(_COUNT)
        self._async_count = async_client.register_script(_COUNT)

    async def wait_s(self, address: str) -> int | None:
        """Seconds until the client may try again, or None if it may now."""
        with store_errors():
            pipe = self._async_redis.pipeline(transaction=False)
            pipe.get(FAILURES_KEY.format(client=address))
            pipe.ttl(FAILURES_KEY.format(client=address))
            failures, left_s = await pipe.execute()
        return self._wait(int(failures or 0), left_s)

    async def failed(self, address: str) -> int | None:
        """Count a failed credential; the seconds to wait if that put the client past the bound."""
        with store_errors():
            failures, left_s = await self._async_count(keys=[FAILURES_KEY.format(client=address)],
                                                       args=[self._window_s])
        return self._wait(failures, left_s)

    def wait_now_s(self, address: str) -> int | None:
        """`wait_s`, for the synchronous routes (the console's sign-in)."""
        with store_errors():
            pipe = self._redis.pipeline(transaction=False)
            pipe.get(FAILURES_KEY.format(client=address))
            pipe.ttl(FAILURES_KEY.format(client=address))
            failures, left_s = pipe.execute()
        return self._wait(int(failures or 0), left_s)

    def failed_now(self, address: str) -> int | None:
        """`failed`, for the synchronous routes (the console's sign-in)."""
        with store_errors():
            failures, left_s = self._count(keys=[FAILURES_KEY.format(client=address)], args=[self._window_s])
        return self._wait(failures, left_s)

    def _wait(self, failures: int, left_s: int) -> int | None:
        if failures < self._most:
            return None
        return max(1, left_s if left_s > 0 else self._window_s)
