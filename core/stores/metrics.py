"""Metrics kept in Redis, so the API and every worker expose the same service-wide figures to Prometheus."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import redis
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector, CollectorRegistry

from config.celery_config import BUILD_QUEUE
from core.phases import REPORTED_STEPS
from core.stores.builds import builds_running

FINISHED_KEY = "imagebuilder:metrics:finished"  # hash: final phase -> builds
STEP_KEY = "imagebuilder:metrics:step:{step}"  # hash: bucket bound -> count, plus `sum` and `count`
REGISTRY_ERRORS_KEY = "imagebuilder:metrics:registry_errors"  # hash: error kind -> count
WEBHOOK_IGNORED_KEY = "imagebuilder:metrics:webhook_ignored"  # hash: why -> pushes a webhook named, ignored
OUT_OF_SCOPE = "out-of-scope"  # on a registry the webhook's token does not speak for
WORKERS_KEY = "imagebuilder:workers"  # sorted set: worker hostname -> when it counts as gone (epoch s)
HOURLY_KEY = "imagebuilder:metrics:hour:{hour}"  # hash: final phase -> builds that ended in that hour
DURATIONS_KEY = "imagebuilder:metrics:durations"  # list of "ended_at duration_s" for the newest runs
WORKER_SEEN_TTL_S = 30.0  # a worker not heard of for this long counts as gone
# Where a worker leaves its node name, for `imagebuilder health --worker` in the same container
WORKER_NAME_FILE = Path(tempfile.gettempdir()) / "imagebuilder-worker-name"
HOURS_SHOWN = 24
DURATIONS_KEPT = 1000
STEP_BUCKETS_S = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600)
STEPS = tuple(step.value for step in REPORTED_STEPS)


class Metrics:
    """Records build outcomes, step durations and registry errors; every worker process adds to the same hashes."""

    def __init__(self, client: redis.Redis):
        self._redis = client

    def hourly_phases(self, now: float) -> list[tuple[int, dict[str, int]]]:
        """The last HOURS_SHOWN hours, oldest first: (hour start, epoch s) and builds ended in it by phase."""
        this_hour = int(now // 3600)
        hours = range(this_hour - HOURS_SHOWN + 1, this_hour + 1)
        pipe = self._redis.pipeline(transaction=False)
        for hour in hours:
            pipe.hgetall(HOURLY_KEY.format(hour=hour))
        return [(hour * 3600, {phase: int(n) for phase, n in counts.items()})
                for hour, counts in zip(hours, pipe.execute())]

    def durations_since(self, since: float) -> list[float]:
        """How long each of the newest runs that ended after `since` took, in seconds."""
        pairs = (entry.split(" ") for entry in self._redis.lrange(DURATIONS_KEY, 0, DURATIONS_KEPT - 1))
        return [float(duration) for ended_at, duration in pairs if float(ended_at) >= since]

    def workers(self) -> list[tuple[str, float]]:
        """Each worker seen lately, with when it was last heard of (epoch s)."""
        return [(name, expires - WORKER_SEEN_TTL_S) for name, expires in
                self._redis.zrangebyscore(WORKERS_KEY, time.time(), "+inf", withscores=True)]

    def step_took(self, step: str, seconds: float) -> None:
        key = STEP_KEY.format(step=step)
        pipe = self._redis.pipeline(transaction=False)
        for bound in STEP_BUCKETS_S:
            if seconds <= bound:
                pipe.hincrby(key, str(bound), 1)
        pipe.hincrbyfloat(key, "sum", seconds)
        pipe.hincrby(key, "count", 1)
        pipe.execute()

    def registry_error(self, kind: str) -> None:
        self._redis.hincrby(REGISTRY_ERRORS_KEY, kind, 1)

    def webhook_ignored(self, why: str, pushes: int) -> None:
        self._redis.hincrby(WEBHOOK_IGNORED_KEY, why, pushes)

    def worker_alive(self, hostname: str) -> None:
        self._redis.zadd(WORKERS_KEY, {hostname: time.time() + WORKER_SEEN_TTL_S})

    def worker_seen(self, hostname: str) -> bool:
        score = self._redis.zscore(WORKERS_KEY, hostname)
        return score is not None and score > time.time()

    def workers_seen(self) -> int:
        return int(self._redis.zcount(WORKERS_KEY, time.time(), "+inf"))


class RedisCollector(Collector):
    """Reads the figures from Redis at every scrape."""

    def __init__(self, client: redis.Redis):
        self._redis = client

    def collect(self) -> Iterator:
        finished = CounterMetricFamily("imagebuilder_builds_finished", "Builds by final phase", labels=["phase"])
        for phase, count in sorted(self._redis.hgetall(FINISHED_KEY).items()):
            finished.add_metric([phase], float(count))
        yield finished
        yield self._durations()
        errors = CounterMetricFamily("imagebuilder_registry_errors", "Registry request errors by kind", labels=["kind"])
        for kind, count in sorted(self._redis.hgetall(REGISTRY_ERRORS_KEY).items()):
            errors.add_metric([kind], float(count))
        yield errors
        ignored = CounterMetricFamily("imagebuilder_webhook_pushes_ignored", "Pushes webhooks named that were "
                                      "ignored, by why", labels=["why"])
        for why, count in sorted(self._redis.hgetall(WEBHOOK_IGNORED_KEY).items()):
            ignored.add_metric([why], float(count))
        yield ignored
        yield GaugeMetricFamily("imagebuilder_builds_in_progress", "Builds running now",
                                value=builds_running(self._redis))
        yield GaugeMetricFamily("imagebuilder_queue_depth", "Builds waiting in the queue",
                                value=queue_depth(self._redis))
        yield GaugeMetricFamily("imagebuilder_workers", "Workers seen in the last half minute",
                                value=Metrics(self._redis).workers_seen())

    def _durations(self) -> HistogramMetricFamily:
        family = HistogramMetricFamily("imagebuilder_step_duration_seconds", "Build step durations", labels=["step"])
        for step in STEPS:
            raw = self._redis.hgetall(STEP_KEY.format(step=step))
            buckets = [(str(float(bound)), float(raw.get(str(bound), 0))) for bound in STEP_BUCKETS_S]
            count = float(raw.get("count", 0))
            family.add_metric([step], buckets + [("+Inf", count)], float(raw.get("sum", 0)))
        return family


def queue_depth(client: redis.Redis) -> int:
    """Build messages waiting in the broker's queue for a worker."""
    return int(client.llen(BUILD_QUEUE))


def metrics_registry(client: redis.Redis) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RedisCollector(client))
    return registry
