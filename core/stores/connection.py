"""Where the process meets Redis: its clients (one pool each, made at wiring), and the one place Redis's and the
broker's errors become the domain's StoreUnavailable."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import kombu.exceptions
import redis
import redis.asyncio
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from config.settings import Settings
from core.errors import StoreUnavailable

REDIS_RETRIES = 3
REDIS_PATIENT_RETRIES = 35  # about a minute with the backoff below
ASYNC_POOL_WAIT_S = 10  # how long an asyncio command waits for a free connection before Redis counts as away


def redis_client(settings: Settings, *, patient: bool = False) -> redis.Redis:
    """A client for records and logs on the same Redis as the broker; replies decoded as text.

    A patient client (the worker's) rides out a Redis restart of up to a minute instead of failing a build."""
    retries = REDIS_PATIENT_RETRIES if patient else REDIS_RETRIES
    return redis.Redis.from_url(
        settings.redis_dsn, decode_responses=True, retry=Retry(ExponentialBackoff(cap=2.0, base=0.1), retries),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
    )


def async_redis_client(redis_url: str, *, max_connections: int) -> redis.asyncio.Redis:
    """An asyncio client on the same Redis, for the API's event loop (its edge, its live logs), retrying as
    `redis_client` does. Past `max_connections` in use, a command waits up to ASYNC_POOL_WAIT_S for one to come
    free rather than failing at once, so a burst of requests queues instead of answering 503."""
    pool = redis.asyncio.BlockingConnectionPool.from_url(
        redis_url, max_connections=max_connections, timeout=ASYNC_POOL_WAIT_S, decode_responses=True,
        retry=AsyncRetry(ExponentialBackoff(cap=2.0, base=0.1), REDIS_RETRIES),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
    )
    return redis.asyncio.Redis(connection_pool=pool)


@contextmanager
def store_errors() -> Iterator[None]:
    """Redis's and the broker's errors, as the domain's StoreUnavailable (naming the setting: its value may hold
    a password)."""
    try:
        yield
    except (redis.exceptions.RedisError, kombu.exceptions.OperationalError) as e:
        raise StoreUnavailable(f"cannot reach Redis at IMAGEBUILDER_REDIS_URL: {type(e).__name__}") from None
