"""The Celery configuration, derived from Settings (never read from globals)."""

from __future__ import annotations

from typing import Any

from config.redis_target import RedisTarget
from config.settings import Settings
from core.errors import SettingsError

BUILD_QUEUE = "builds"
# Checks (a webhook's bases, the scheduling pass) have a queue of their own, so none waits in front of a build.
CHECK_QUEUE = "checks"
WORKER_QUEUES = (BUILD_QUEUE, CHECK_QUEUE)
# Every task, by its stable public name (other languages send `imagebuilder.build` by name), and its queue
BUILD_TASK_NAME = "imagebuilder.build"  # one delivery of a build (worker/tasks.py)
BASES_PUSHED_TASK = "imagebuilder.bases_pushed"  # check the stored specs built on pushed tags (worker/basewatch.py)
SCHEDULE_PASS_TASK = "imagebuilder.schedule_pass"  # decide the due schedules (worker/scheduling.py)
# one platform's part of a multi-platform build (worker/parts.py), sent to that platform's queue
# (core.platforms.Platform.queue: `builds.linux-arm64`) by the one sender, worker/platformbuild.py
PART_TASK_NAME = "imagebuilder.build_part"
TASK_QUEUES = {BUILD_TASK_NAME: BUILD_QUEUE, BASES_PUSHED_TASK: CHECK_QUEUE, SCHEDULE_PASS_TASK: CHECK_QUEUE}
SCHEDULE_PASS_ENTRY = "imagebuilder-schedule-pass"  # the one entry of celery-redbeat's schedule


def check_delivery_settings(settings: Settings) -> None:
    """Refuse to start a worker whose broker would redeliver a build that is still running."""
    if settings.broker_visibility_timeout_s <= settings.hard_time_limit_s:
        raise SettingsError(
            f"IMAGEBUILDER_VISIBILITY_TIMEOUT_S ({settings.broker_visibility_timeout_s} s) must exceed the hard "
            f"time limit of a build ({settings.hard_time_limit_s} s = IMAGEBUILDER_BUILD_TIMEOUT_S + "
            f"{settings.hard_time_limit_s - settings.build_timeout_s} s), or Redis would hand running builds "
            "to a second worker"
        )


def _tls(target: RedisTarget) -> dict[str, Any]:
    """TLS for Sentinel's `sentinel://` URLs, which cannot say `rediss://` themselves."""
    if not (target.sentinel and target.tls):
        return {}
    options = {k: v for k, v in target.tls_options().items() if k != "ssl"}
    return {"broker_use_ssl": options or True, "redis_backend_use_ssl": options or True}


def celery_config(settings: Settings) -> dict[str, Any]:
    """Broker, backend, serialisation, routing and delivery settings for producer and worker alike."""
    target = settings.redis_target
    transport = {"visibility_timeout": settings.broker_visibility_timeout_s, **target.celery_transport_options()}
    return {
        "broker_url": target.celery_url(),
        "result_backend": target.celery_url(),
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_routes": {name: {"queue": queue} for name, queue in TASK_QUEUES.items()},
        "task_default_queue": BUILD_QUEUE,
        "result_expires": settings.result_expires_s,
        # A build is acknowledged only when it ends; a lost pool process puts it back (capped by
        # IMAGEBUILDER_MAX_DELIVERIES in the task), and a worker takes one build at a time per process.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "broker_transport_options": transport,
        "result_backend_transport_options": transport,
        **_tls(target),
        "result_backend_always_retry": True,
        "result_backend_max_retries": 30,
        "broker_connection_retry_on_startup": True,
        # A build running when the broker's connection drops (a Redis restart, a failover) goes on, and ends on the
        # Redis that answers next: cancelled, it would wait in the broker's unacknowledged set for the visibility
        # timeout. Its delivery, if the broker hands it out again, finds it ended and is ignored (worker/tasks.py).
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        # On a cold shutdown (SIGQUIT, or SIGTERM with REMAP_SIGTERM=SIGQUIT) running builds get this long to
        # finish; then they are stopped and, acknowledged late, go back to the queue for another worker.
        "worker_soft_shutdown_timeout": settings.soft_shutdown_s,
        # The build's own watch stops it at IMAGEBUILDER_BUILD_TIMEOUT_S; these limits are the backstop.
        "task_soft_time_limit": settings.build_timeout_s + 30,
        "task_time_limit": settings.hard_time_limit_s,
    }
