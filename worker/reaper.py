"""The reaper: every worker looks for builds whose heartbeat stopped (their worker died) and redelivers them.

Redis would redeliver such a build only after the visibility timeout, which must outlast the longest build;
the heartbeat lets a surviving worker take it over within seconds instead."""

from __future__ import annotations

import logging
import tempfile
import threading
from pathlib import Path

from celery import bootsteps
from prometheus_client import start_http_server

from config.celery_config import BUILD_QUEUE, BUILD_TASK_NAME, redis_client
from worker.coordination import Coordinator
from worker.metrics import Metrics, metrics_registry
from worker.records import BuildRecords

logger = logging.getLogger(__name__)

REAP_INTERVAL_S = 5.0
NODE_NAME_FILE = Path(tempfile.gettempdir()) / "imagebuilder-worker-name"
WORKER_SEEN_TTL_S = 30.0


def reap_once(app, coordinator: Coordinator, records: BuildRecords) -> list[str]:
    """Redeliver every build whose heartbeat expired and that has not ended; the ids redelivered."""
    redelivered = []
    for build_id in coordinator.claim_dead():
        record, message = records.find(build_id), coordinator.message(build_id)
        if record is None or record.phase.is_final or message is None:
            continue
        app.send_task(BUILD_TASK_NAME, kwargs=message, task_id=build_id, queue=BUILD_QUEUE)
        logger.warning("build %s lost its worker (no heartbeat): redelivered", build_id)
        redelivered.append(build_id)
    return redelivered


class Reaper(bootsteps.StartStopStep):
    """A worker bootstep in the worker's main process: a thread that says the worker is alive and runs
    `reap_once`, and, with IMAGEBUILDER_METRICS_PORT, the Prometheus endpoint."""

    def __init__(self, worker, **kwargs):
        super().__init__(worker, **kwargs)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, worker) -> None:
        self._hostname = worker.hostname
        NODE_NAME_FILE.write_text(worker.hostname)  # for `imagebuilder health --worker` in the same container
        port = worker.app.settings.metrics_port
        if port:
            start_http_server(port, registry=metrics_registry(redis_client(worker.app.settings, patient=True)))
        self._thread = threading.Thread(target=self._loop, args=(worker.app,), name="imagebuilder-reaper", daemon=True)
        self._thread.start()

    def stop(self, worker) -> None:
        self._stop.set()

    def _loop(self, app) -> None:
        client = redis_client(app.settings, patient=True)
        coordinator = Coordinator(client, expires_s=app.settings.result_expires_s)
        records = BuildRecords(client, expires_s=app.settings.result_expires_s)
        metrics = Metrics(client)
        while True:
            try:
                metrics.worker_alive(self._hostname, WORKER_SEEN_TTL_S)
                reap_once(app, coordinator, records)
            except Exception:
                logger.warning("reaper round failed; trying again", exc_info=True)
            if self._stop.wait(REAP_INTERVAL_S):
                return
