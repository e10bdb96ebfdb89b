"""The service's state through the client: workers and what they run, the queue, recent figures; readiness and
health; the Prometheus exposition of the service-wide metrics."""

from __future__ import annotations

import time
from datetime import datetime, timezone

from prometheus_client import generate_latest

from core.stores.metrics import metrics_registry, queue_depth
from producer.client.wiring import ClientWiring, translated
from producer.overview import HourOfBuilds, Operations, WorkerListing, percentile

DAY_S = 24 * 3600


@translated
class ServiceState:
    """What the operations page, the probes and `/metrics` show."""

    def __init__(self, wiring: ClientWiring):
        self._stores = wiring.stores
        self._registry = metrics_registry(wiring.stores.redis)

    def overview(self) -> Operations:
        """Workers and what each runs, the queue, and the last 24 hours' builds by phase and duration."""
        now = time.time()
        running = self._stores.builds.running()
        current: dict[str, list[str]] = {}
        for result in running:  # a worker runs as many builds at once as its concurrency
            current.setdefault(result.worker or "", []).append(result.id)
        workers = [WorkerListing(name=name, last_seen=datetime.fromtimestamp(seen, timezone.utc),
                                 current_builds=current.get(name, [])) for name, seen in self._stores.metrics.workers()]
        hours = [HourOfBuilds(start=datetime.fromtimestamp(start, timezone.utc), phases=phases)
                 for start, phases in self._stores.metrics.hourly_phases(now)]
        durations = self._stores.metrics.durations_since(now - DAY_S)
        return Operations(workers=workers, queue_depth=queue_depth(self._stores.redis), running=len(running),
                          hours=hours, p50_duration_s=percentile(durations, 50),
                          p95_duration_s=percentile(durations, 95))

    def redis_answers(self) -> bool:
        return bool(self._stores.redis.ping())

    def workers_seen(self) -> int:
        """Workers heard of in the last half minute."""
        return self._stores.metrics.workers_seen()

    def worker_seen(self, name: str) -> bool:
        return self._stores.metrics.worker_seen(name)

    def metrics_text(self) -> bytes:
        """The service-wide metrics, in Prometheus's text format."""
        return generate_latest(self._registry)
