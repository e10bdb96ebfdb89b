"""The Celery configuration, derived from Settings (never read from globals)."""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from config.settings import Settings, SettingsError

BUILD_TASK_NAME = "imagebuilder.build"
BUILD_QUEUE = "builds"
# Checks (a webhook's bases, the scheduling pass) have a queue of their own, so none waits in front of a build.
CHECK_QUEUE = "checks"
WORKER_QUEUES = (BUILD_QUEUE, CHECK_QUEUE)
BASES_PUSHED_TASK = "imagebuilder.bases_pushed"  # check the stored specs built on pushed tags (worker/basewatch.py)
REDIS_RETRIES = 3
REDIS_PATIENT_RETRIES = 35  # about a minute with the backoff below
ASYNC_POOL_WAIT_S = 10  # how long an asyncio command waits for a free connection before Redis counts as away


def check_delivery_settings(settings: Settings) -> None:
    """Refuse to start a worker whose broker would redeliver a build that is still running."""
    if settings.broker_visibility_timeout_s <= settings.hard_time_limit_s:
        raise SettingsError(
            f"IMAGEBUILDER_VISIBILITY_TIMEOUT_S ({settings.broker_visibility_timeout_s} s) must exceed the hard "
            f"time limit of a build ({settings.hard_time_limit_s} s = IMAGEBUILDER_BUILD_TIMEOUT_S + "
            f"{settings.hard_time_limit_s - settings.build_timeout_s} s), or Redis would hand running builds "
            "to a second worker"
        )


def celery_config(settings: Settings) -> dict[str, Any]:
    """Broker, backend, serialisation, routing and delivery settings for producer and worker alike."""
    visibility = {"visibility_timeout": settings.broker_visibility_timeout_s}
    return {
        "broker_url": settings.redis_dsn,
        "result_backend": settings.redis_dsn,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_routes": {BUILD_TASK_NAME: {"queue": BUILD_QUEUE}},
        "task_default_queue": BUILD_QUEUE,
        "result_expires": settings.result_expires_s,
        # A build is acknowledged only when it ends; a lost pool process puts it back (capped by
        # IMAGEBUILDER_MAX_DELIVERIES in the task), and a worker takes one build at a time per process.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "broker_transport_options": visibility,
        "result_backend_transport_options": visibility,
        "result_backend_always_retry": True,
        "result_backend_max_retries": 30,
        "broker_connection_retry_on_startup": True,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        # On a cold shutdown (SIGQUIT, or SIGTERM with REMAP_SIGTERM=SIGQUIT) running builds get this long to
        # finish; then they are stopped and, acknowledged late, go back to the queue for another worker.
        "worker_soft_shutdown_timeout": settings.soft_shutdown_s,
        # The build's own watch stops it at IMAGEBUILDER_BUILD_TIMEOUT_S; these limits are the backstop.
        "task_soft_time_limit": settings.build_timeout_s + 30,
        "task_time_limit": settings.hard_time_limit_s,
    }


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
