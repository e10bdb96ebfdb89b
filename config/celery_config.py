"""The Celery configuration, derived from Settings (never read from globals)."""

from __future__ import annotations

from typing import Any

import redis

from config.settings import Settings

BUILD_TASK_NAME = "imagebuilder.build"
BUILD_QUEUE = "builds"
# The hard limit leaves the soft limit time to stop the build container and record the failure.
HARD_LIMIT_GRACE_S = 60
# Redis redelivers an unacknowledged task after the visibility timeout: it must outlast any build.
VISIBILITY_MARGIN_S = 600


def hard_time_limit_s(settings: Settings) -> int:
    return settings.build_timeout_s + HARD_LIMIT_GRACE_S


def visibility_timeout_s(settings: Settings) -> int:
    return hard_time_limit_s(settings) + VISIBILITY_MARGIN_S


def celery_config(settings: Settings) -> dict[str, Any]:
    """Broker, backend, serialisation, routing and delivery settings for producer and worker alike."""
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
        "task_acks_late": True,
        "worker_prefetch_multiplier": 1,
        "broker_transport_options": {"visibility_timeout": visibility_timeout_s(settings)},
        "result_backend_transport_options": {"visibility_timeout": visibility_timeout_s(settings)},
        "broker_connection_retry_on_startup": True,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "task_soft_time_limit": settings.build_timeout_s,
        "task_time_limit": hard_time_limit_s(settings),
    }


def redis_client(settings: Settings) -> redis.Redis:
    """A client for records and logs on the same Redis as the broker; replies decoded as text."""
    return redis.Redis.from_url(settings.redis_dsn, decode_responses=True)
