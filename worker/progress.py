"""Progress of one build: advances its record, appends its log, and mirrors each change as a Celery state."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from worker.logs import BuildLog
from worker.metrics import Metrics
from worker.records import BuildRecords
from worker.result import BuildResult, utcnow
from worker.states import BuildPhase, BuildStep

StateSink = Callable[[str, dict[str, Any]], None]


class Progress:
    """The one writer of a running build's record; a raw message with no record yet gets one here."""

    def __init__(self, build_id: str, records: BuildRecords, log: BuildLog, on_state: StateSink,
                 metrics: Metrics | None = None, worker: str | None = None,
                 on_change: Callable[[BuildResult], None] = lambda result: None):
        self._records = records
        self._log = log
        self._on_state = on_state
        self._metrics = metrics
        self._worker = worker
        self._on_change = on_change
        self._step_started: tuple[BuildStep, float] | None = None
        self.result = records.find(build_id) or BuildResult(id=build_id, image="", submitted_at=utcnow())

    def start(self, image: str) -> None:
        self._update(phase=BuildPhase.RUNNING, image=image, started_at=utcnow(), error=None, step=None,
                     worker=self._worker)
        self._on_change(self.result)
        self._on_state(BuildPhase.RUNNING.value.upper(), self._meta())

    def step(self, step: BuildStep) -> None:
        self._end_step()
        self._step_started = (step, time.monotonic())
        self._update(step=step)
        self.line(f"==> {step.value}")
        self._on_state(step.celery_state, self._meta())

    def line(self, text: str) -> None:
        self._log.append(self.result.id, text)

    def succeed(self, **fields: Any) -> BuildResult:
        return self._finish(BuildPhase.SUCCEEDED, **fields)

    def requeue(self, reason: str) -> None:
        """Back to Pending until the retry is delivered (a Running record would count as a lost worker)."""
        self.line(f"transient failure, will retry: {reason}")
        self._update(phase=BuildPhase.PENDING, step=None)
        self._on_change(self.result)

    def cancel(self) -> BuildResult:
        self.line("cancelled on request: nothing was pushed")
        return self._finish(BuildPhase.CANCELLED)

    def fail(self, error: str) -> BuildResult:
        self.line(f"ERROR: {error}")
        return self._finish(BuildPhase.FAILED, error=error)

    def _finish(self, phase: BuildPhase, **fields: Any) -> BuildResult:
        self._end_step()
        final = self.result.model_copy(update={"phase": phase, "finished_at": utcnow(), **fields})
        self._on_change(final)  # the history has the end before anyone who waits on the record sees it
        self.result = final
        self._records.save(final)
        self._log.close(final.id, phase.value)
        if self._metrics:
            self._metrics.finished(phase.value)
        return final

    def _end_step(self) -> None:
        if self._step_started and self._metrics:
            step, started = self._step_started
            self._metrics.step_took(step.value, time.monotonic() - started)
        self._step_started = None

    def _update(self, **fields: Any) -> None:
        self.result = self.result.model_copy(update=fields)
        self._records.save(self.result)

    def _meta(self) -> dict[str, Any]:
        return self.result.model_dump(mode="json")
