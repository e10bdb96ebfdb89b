"""Where the process meets Redis: its clients (one pool each, made at wiring) on the one server or the master
Sentinel names (config/redis_target.py), the wait for replicas, and the one place Redis's and the broker's errors
become the domain's StoreUnavailable."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import kombu.exceptions
import redis
import redis.asyncio
import redis.asyncio.connection
import redis.asyncio.sentinel
import redis.connection
import redis.sentinel
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from config.redis_target import (
    REDIS_CONNECT_TIMEOUT_S,
    REDIS_SOCKET_TIMEOUT_S,
    RedisTarget,
)
from config.settings import Settings
from core.errors import NotReplicated, StoreUnavailable

logger = logging.getLogger(__name__)

REDIS_RETRIES = 3
REDIS_PATIENT_RETRIES = 35  # about a minute with the backoff below
ASYNC_POOL_WAIT_S = 10  # how long an asyncio command waits for a free connection before Redis counts as away
REPLICATED_MARK_KEY = "imagebuilder:replicated"  # written last before a WAIT, so the wait covers every write before
RETRIED_ERRORS = [redis.ConnectionError, redis.TimeoutError]


def redis_client(settings: Settings, *, patient: bool = False) -> redis.Redis:
    """A client for records and logs on the same Redis as the broker; replies decoded as text.

    A patient client (the worker's) rides out a Redis restart, or a failover, of up to a minute instead of failing
    a build; with Sentinel, each reconnection asks the sentinels where the master is now."""
    retry = Retry(ExponentialBackoff(cap=2.0, base=0.1), REDIS_PATIENT_RETRIES if patient else REDIS_RETRIES)
    options = {"decode_responses": True, "retry": retry, "retry_on_error": RETRIED_ERRORS, **_timeouts()}
    target = settings.redis_target
    if not target.sentinel:
        return redis.Redis.from_url(target.url, **options)
    sentinels = redis.sentinel.Sentinel(target.sentinels, sentinel_kwargs=target.sentinel_options(),
                                        **target.server_options())
    connection = RediscoveringSSLConnection if target.tls else RediscoveringConnection
    return sentinels.master_for(target.master_name, connection_class=connection, **options)


def async_redis_client(target: RedisTarget, *, max_connections: int) -> redis.asyncio.Redis:
    """An asyncio client on the same Redis, for the API's event loop (its edge, its live logs), retrying as
    `redis_client` does. Past `max_connections` in use, a command waits up to ASYNC_POOL_WAIT_S for one to come
    free rather than failing at once, so a burst of requests queues instead of answering 503."""
    options = {"max_connections": max_connections, "timeout": ASYNC_POOL_WAIT_S, "decode_responses": True,
               "retry": AsyncRetry(ExponentialBackoff(cap=2.0, base=0.1), REDIS_RETRIES),
               "retry_on_error": RETRIED_ERRORS, **_timeouts()}
    if not target.sentinel:
        return redis.asyncio.Redis(connection_pool=redis.asyncio.BlockingConnectionPool.from_url(target.url, **options))
    sentinels = redis.asyncio.sentinel.Sentinel(target.sentinels, sentinel_kwargs=target.sentinel_options(),
                                                **target.server_options())
    connection = AsyncRediscoveringSSLConnection if target.tls else AsyncRediscoveringConnection
    return sentinels.master_for(target.master_name, connection_pool_class=BlockingSentinelPool,
                                connection_class=connection, **options)


class RediscoveringConnection(redis.sentinel.SentinelManagedConnection):
    """redis-py's connection to the master Sentinel names, asking the sentinels again on every reconnection. Its own
    reconnects when a command is sent through a base-class path that its `connect` does not see, so a retried
    command went back to the server it had before, a demoted master say, until the retries ran out."""

    def send_packed_command(self, command, check_health=True):
        if not self._sock:
            self.connect()
        return super().send_packed_command(command, check_health)


class RediscoveringSSLConnection(RediscoveringConnection, redis.connection.SSLConnection):
    pass


class AsyncRediscoveringConnection(redis.asyncio.sentinel.SentinelManagedConnection):
    """The same, for asyncio."""

    async def send_packed_command(self, command, check_health=True):
        if not self.is_connected:
            await self.connect()
        return await super().send_packed_command(command, check_health)


class AsyncRediscoveringSSLConnection(AsyncRediscoveringConnection, redis.asyncio.connection.SSLConnection):
    pass


class BlockingSentinelPool(redis.asyncio.sentinel.SentinelConnectionPool, redis.asyncio.BlockingConnectionPool):
    """The master's pool that waits for a free connection, as the plain server's does."""


def _timeouts() -> dict[str, float]:
    return {"socket_timeout": REDIS_SOCKET_TIMEOUT_S, "socket_connect_timeout": REDIS_CONNECT_TIMEOUT_S}


class Replicas:
    """Waits until IMAGEBUILDER_REDIS_WAIT_REPLICAS replicas hold every write made so far, on any connection (the
    stream to replicas is one, in order, so a mark written now and waited for covers all before it); with none
    set, it sends nothing."""

    def __init__(self, client: redis.Redis, target: RedisTarget):
        self._client = client
        self._wanted = target.wait_replicas
        self._timeout_ms = target.wait_timeout_ms

    def confirm(self) -> None:
        """For an answer that may say "try again": NotReplicated when fewer replicas confirm in time."""
        if (confirmed := self._confirmed()) < self._wanted:
            raise NotReplicated(f"Redis: {confirmed} of IMAGEBUILDER_REDIS_WAIT_REPLICAS={self._wanted} replicas "
                                f"confirmed the write within {self._timeout_ms} ms; try again")

    def confirm_or_log(self, what: str) -> None:
        """For a write that stands whatever the replicas say (a build's end, a claim): a warning naming `what` when
        fewer replicas hold it in time, for a failover now would lose it."""
        if self._confirmed() < self._wanted:
            logger.warning("%s is not on a replica yet (IMAGEBUILDER_REDIS_WAIT_REPLICAS)", what)

    def _confirmed(self) -> int:
        if not self._wanted:
            return 0
        with store_errors():
            pipe = self._client.pipeline(transaction=False)
            pipe.set(REPLICATED_MARK_KEY, "1")
            pipe.wait(self._wanted, self._timeout_ms)
            return pipe.execute()[-1]


@contextmanager
def store_errors() -> Iterator[None]:
    """Redis's and the broker's errors, as the domain's StoreUnavailable (naming the setting: its value may hold
    a password)."""
    try:
        yield
    except (redis.exceptions.RedisError, kombu.exceptions.OperationalError) as e:
        raise StoreUnavailable(f"cannot reach Redis at IMAGEBUILDER_REDIS_URL: {type(e).__name__}") from None
