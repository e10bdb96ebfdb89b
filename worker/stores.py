"""The Redis-backed stores a process works with, wired once over one client and handed to whoever needs them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import kombu.exceptions
import redis

from config.celery_config import redis_client
from config.settings import Settings
from worker.buildstate import BuildLog, BuildState
from worker.errors import StoreUnavailable
from worker.lifecycle import Lifecycle
from worker.metrics import Metrics
from worker.schedules import ScheduleStore
from worker.specstore import SpecStore
from worker.triggerstore import TriggerStore


@dataclass(frozen=True)
class Stores:
    """Builds, their logs, stored specs, schedules, trigger claims and metrics, over one Redis client."""

    redis: redis.Redis
    builds: BuildState
    log: BuildLog
    specs: SpecStore
    schedules: ScheduleStore
    triggers: TriggerStore
    metrics: Metrics
    lifecycle: Lifecycle

    def close(self) -> None:
        self.redis.close()


def open_stores(settings: Settings, *, patient: bool = False,
                announce_rebuilt: Callable[[str], None] | None = None) -> Stores:
    """Every store on a new client (a patient one rides out a Redis restart; see `redis_client`)."""
    return stores_on(redis_client(settings, patient=patient), settings, announce_rebuilt)


def stores_on(client: redis.Redis, settings: Settings,
              announce_rebuilt: Callable[[str], None] | None = None) -> Stores:
    """The stores over `client`; `announce_rebuilt` is told of new images that stored specs are built on."""
    builds = BuildState(client, expires_s=settings.result_expires_s)
    log = BuildLog(client, max_lines=settings.log_max_lines, retention_s=settings.log_retention_s)
    specs = SpecStore(client, log, keep_succeeded=settings.history_keep_succeeded,
                      keep_failed=settings.history_keep_failed)
    schedules = ScheduleStore(client, disable_after=settings.schedule_disable_after)
    metrics = Metrics(client)
    return Stores(client, builds, log, specs, schedules, TriggerStore(client), metrics,
                  Lifecycle(builds, log, specs, schedules, metrics, announce_rebuilt))


@contextmanager
def store_errors() -> Iterator[None]:
    """Redis's and the broker's errors, as the domain's StoreUnavailable (naming the setting: its value may hold
    a password)."""
    try:
        yield
    except (redis.exceptions.RedisError, kombu.exceptions.OperationalError) as e:
        raise StoreUnavailable(f"cannot reach Redis at IMAGEBUILDER_REDIS_URL: {type(e).__name__}") from None
