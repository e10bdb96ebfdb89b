"""`imagebuilder beat`: Celery beat with celery-redbeat, sending the scheduling pass from whichever beat holds
the Redis lock; a standby beat takes over within BEAT_LOCK_TIMEOUT_S of the active one dying."""

from __future__ import annotations

from collections.abc import Sequence

from config.celery_config import CHECK_QUEUE, SCHEDULE_PASS_ENTRY, SCHEDULE_PASS_TASK
from config.settings import Settings
from core.app import ImageBuilderCelery, create_app
from core.stores.beatschedule import PatientRedBeatScheduler

BEAT_LOCK_TIMEOUT_S = 30  # the lock outlives a few loop intervals, so a live beat never loses it
BEAT_MAX_LOOP_INTERVAL_S = 5


def create_beat_app(settings: Settings) -> ImageBuilderCelery:
    app = create_app(settings)
    app.conf.update(
        beat_scheduler=f"{PatientRedBeatScheduler.__module__}:{PatientRedBeatScheduler.__name__}",
        **settings.redis_target.redbeat_options(),
        redbeat_key_prefix="imagebuilder:redbeat",
        redbeat_lock_timeout=BEAT_LOCK_TIMEOUT_S,
        beat_max_loop_interval=BEAT_MAX_LOOP_INTERVAL_S,
        beat_schedule={
            SCHEDULE_PASS_ENTRY: {
                "task": SCHEDULE_PASS_TASK,
                "schedule": settings.schedule_pass_s,
                # A pass nobody ran in time is dropped: the next one decides the same schedules.
                "options": {"queue": CHECK_QUEUE, "expires": settings.schedule_pass_s},
            }
        },
    )
    return app


def run_beat(settings: Settings, extra_args: Sequence[str] = ()) -> None:
    create_beat_app(settings).start(["beat", "--loglevel", "INFO", *extra_args])
