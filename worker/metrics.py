"""Metrics kept in Redis, so the API and every worker expose the same service-wide figures to Prometheus."""

from __future__ import annotations

import time
from collections.abc import Iterator

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from config.celery_config import BUILD_QUEUE
from worker.buildstate import builds_running

FINISHED_KEY = "imagebuilder:metrics:finished"  # hash: final phase -> builds
STEP_KEY = "imagebuilder:metrics:step:{step}"  # hash: bucket bound -> count, plus `sum` and `count`
REGISTRY_ERRORS_KEY = "imagebuilder:metrics:registry_errors"  # hash: error kind -> count
WORKERS_KEY = "imagebuilder:workers"  # sorted set: worker hostname -> when it counts as gone (epoch s)
STEP_BUCKETS_S = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600)
STEPS = ("pulling", "building", "pushing")


class Metrics:
    """Records build outcomes, step durations and registry errors; every worker process adds to the same hashes."""

    def __init__(self, client: redis.Redis):
        self._redis = client

    def finished(self, phase: str) -> None:
        self._redis.hincrby(FINISHED_KEY, phase, 1)

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

    def worker_alive(self, hostname: str, ttl_s: float) -> None:
        self._redis.zadd(WORKERS_KEY, {hostname: time.time() + ttl_s})

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
        yield GaugeMetricFamily("imagebuilder_builds_in_progress", "Builds running now",
                                value=builds_running(self._redis))
        yield GaugeMetricFamily("imagebuilder_queue_depth", "Builds waiting in the queue",
                                value=self._redis.llen(BUILD_QUEUE))
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


def metrics_registry(client: redis.Redis) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RedisCollector(client))
    return registry
