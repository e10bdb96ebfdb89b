"""The Redis-backed stores a process works with, wired once over one client and handed to whoever needs them."""

from __future__ import annotations

from dataclasses import dataclass

import redis

from config.settings import Settings
from core.lifecycle import Lifecycle
from core.stores.builds import BuildState
from core.stores.connection import Replicas, redis_client
from core.stores.ending import BuildEnds
from core.stores.logs import BuildLog
from core.stores.metrics import Metrics
from core.stores.parts import PlatformParts
from core.stores.schedules import ScheduleStore
from core.stores.specs import SpecStore
from core.stores.triggers import TriggerStore


@dataclass(frozen=True)
class Stores:
    """Builds, their logs and platform parts, stored specs, schedules, trigger claims and metrics, over one Redis
    client."""

    redis: redis.Redis
    builds: BuildState
    log: BuildLog
    specs: SpecStore
    schedules: ScheduleStore
    triggers: TriggerStore
    metrics: Metrics
    lifecycle: Lifecycle
    parts: PlatformParts
    replicas: Replicas

    def close(self) -> None:
        self.redis.close()


def open_stores(settings: Settings, *, patient: bool = False) -> Stores:
    """Every store on a new client (a patient one rides out a Redis restart; see `redis_client`)."""
    return stores_on(redis_client(settings, patient=patient), settings)


def stores_on(client: redis.Redis, settings: Settings) -> Stores:
    """The stores over `client`."""
    builds = BuildState(client, expires_s=settings.result_expires_s)
    log = BuildLog(client, max_lines=settings.log_max_lines, retention_s=settings.log_retention_s)
    specs = SpecStore(client, builds, log)
    replicas = Replicas(client, settings.redis_target)
    schedules = ScheduleStore(client, replicas, disable_after=settings.schedule_disable_after)
    ends = BuildEnds(client, settings)
    return Stores(client, builds, log, specs, schedules, TriggerStore(client), Metrics(client),
                  Lifecycle(builds, ends, specs, replicas), PlatformParts(client, expires_s=settings.result_expires_s),
                  replicas)
