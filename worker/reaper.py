"""The reaper: every worker looks for builds whose heartbeat stopped (their worker died) and redelivers them; and,
less often, for Pending builds whose message the broker lost, and sends them again.

Redis would redeliver such a build only after the visibility timeout, which must outlast the longest build;
the heartbeat lets a surviving worker take it over within seconds instead. A message lost in a failover (popped by
a worker from a master that died before its replica saw the worker note the delivery) Redis never redelivers."""

from __future__ import annotations

import logging
import time

from celery import bootsteps
from prometheus_client import start_http_server

from config.celery_config import BUILD_QUEUE, BUILD_TASK_NAME
from core.stores.builds import BuildState
from core.stores.metrics import WORKER_NAME_FILE, Metrics, metrics_registry

logger = logging.getLogger(__name__)

REAP_INTERVAL_S = 5.0


def reap_once(app, state: BuildState) -> list[str]:
    """Redeliver every build whose heartbeat expired and that has not ended; the ids redelivered."""
    redelivered = []
    for build_id in state.claim_dead():
        record = state.find(build_id)
        if record is not None and not record.phase.is_final and _send_again(app, state, build_id):
            logger.warning("build %s lost its worker (no heartbeat): redelivered", build_id)
            redelivered.append(build_id)
    return redelivered


def requeue_undelivered(app, state: BuildState, older_than_s: float) -> list[str]:
    """Send again every build Pending for over `older_than_s` whose message the broker lost; the ids sent."""
    sent = []
    for build_id in state.claim_undelivered((BUILD_QUEUE,), older_than_s=older_than_s):
        if _send_again(app, state, build_id):
            logger.warning("build %s was neither queued nor delivered (the broker lost it): sent again", build_id)
            sent.append(build_id)
    return sent


def _send_again(app, state: BuildState, build_id: str) -> bool:
    """Queue the build's stored message again, under its own id; False when it has none (any more)."""
    message = state.message(build_id)
    if message is not None:
        app.send_task(BUILD_TASK_NAME, kwargs=message, task_id=build_id, queue=BUILD_QUEUE)
    return message is not None


class Reaper(bootsteps.StartStopStep):
    """A worker bootstep in the worker's main process: each round says the worker is alive and runs
    `reap_once`; with IMAGEBUILDER_METRICS_PORT it also serves the Prometheus endpoint.

    Rounds run on the worker's own timer, in its event loop, not on a thread of their own: a thread holding a
    lock (an SSL connection's, say) while the prefork pool forks would leave that lock held in the child."""

    requires = ("celery.worker.components:Timer",)

    def __init__(self, worker, **kwargs):
        super().__init__(worker, **kwargs)
        self._timer_entry = None
        self._undelivered_checked_at = float("-inf")

    def start(self, worker) -> None:
        settings, wiring = worker.app.settings, worker.app.wiring
        WORKER_NAME_FILE.write_text(worker.hostname)  # for `imagebuilder health --worker` in the same container
        if settings.metrics_port:
            start_http_server(settings.metrics_port, registry=metrics_registry(wiring.stores().redis))
        # Not the patient stores: a round must not hold up the event loop for long while Redis is away.
        stores = wiring.stores(patient=False)
        round_args = (worker.app, worker.hostname, stores.builds, stores.metrics, settings.requeue_undelivered_after_s)
        self._round(*round_args)
        self._timer_entry = worker.timer.call_repeatedly(REAP_INTERVAL_S, self._round, round_args)

    def stop(self, worker) -> None:
        if self._timer_entry is not None:
            self._timer_entry.cancel()

    def _round(self, app, hostname: str, state: BuildState, metrics: Metrics, undelivered_after_s: float) -> None:
        try:
            metrics.worker_alive(hostname)
            reap_once(app, state)
            if time.monotonic() - self._undelivered_checked_at >= undelivered_after_s:
                self._undelivered_checked_at = time.monotonic()
                requeue_undelivered(app, state, undelivered_after_s)
        except Exception:
            logger.warning("reaper round failed; trying again", exc_info=True)
