"""Throttling guesses: failed credentials are counted per door (the API, the webhooks, the console's sign-in) and
client address in Redis, shared by every API process; past the bound, that address is answered 429 with
Retry-After at that door until its window ends, and no other client, nor another door, is slowed."""

from __future__ import annotations

import ipaddress
from enum import Enum

import redis.asyncio

from core.stores.connection import store_errors

FAILURES_KEY = "imagebuilder:auth-failures:{door}:{client}"  # failed credentials in the current window
IPV6_CLIENT_PREFIX_BITS = 64  # one IPv6 client (a host, a home) holds a whole /64: counted as one

# Count a failure; the first one opens the window. Returns the count and the seconds the window has left.
_COUNT = """
local failures = redis.call('INCR', KEYS[1])
if failures == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return {failures, redis.call('TTL', KEYS[1])}
"""


class Door(str, Enum):
    """Where credentials are tried; each has its own count, so guessing at one locks no other."""

    API = "api"
    HOOKS = "hooks"
    SIGN_IN = "sign-in"


def client_key(address: str) -> str:
    """The address that counts: an IPv6 address's /64, anything else as it is."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    if parsed.version == 4:
        return str(parsed)
    return str(ipaddress.ip_network(f"{parsed}/{IPV6_CLIENT_PREFIX_BITS}", strict=False))


class Throttle:
    """At most `most` failed credentials per door and client in `window_s` seconds."""

    def __init__(self, client: redis.asyncio.Redis, *, most: int, window_s: int):
        self._most = most
        self._window_s = window_s
        self._redis = client
        self._count = client.register_script(_COUNT)

    async def wait_s(self, door: Door, address: str) -> int | None:
        """Seconds until the client may try at this door again, or None if it may now."""
        key = FAILURES_KEY.format(door=door.value, client=client_key(address))
        with store_errors():
            pipe = self._redis.pipeline(transaction=False)
            pipe.get(key)
            pipe.ttl(key)
            failures, left_s = await pipe.execute()
        return self._wait(int(failures or 0), left_s)

    async def failed(self, door: Door, address: str) -> int | None:
        """Count a failed credential; the seconds to wait if that put the client past the bound."""
        key = FAILURES_KEY.format(door=door.value, client=client_key(address))
        with store_errors():
            failures, left_s = await self._count(keys=[key], args=[self._window_s])
        return self._wait(failures, left_s)

    def _wait(self, failures: int, left_s: int) -> int | None:
        if failures < self._most:
            return None
        return max(1, left_s if left_s > 0 else self._window_s)
