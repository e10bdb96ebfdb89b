"""Progress of one build on a worker: moves its record through the lifecycle, appends its log, and mirrors each
change as a Celery state."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from core.errors import AlreadyFinished, BuildCancelled
from core.lifecycle import Lifecycle
from core.phases import BuildPhase, BuildStep
from core.result import BuildResult, utcnow
from core.stores.logs import BuildLog
from core.stores.metrics import Metrics

StateSink = Callable[[str, dict[str, Any]], None]


class Progress:
    """The worker's writer of one build's record; a raw message with no record yet gets one here."""

    def __init__(self, build_id: str, found: BuildResult | None, lifecycle: Lifecycle, log: BuildLog,
                 on_state: StateSink, metrics: Metrics | None = None, worker: str | None = None):
        self._lifecycle = lifecycle
        self._log = log
        self._on_state = on_state
        self._metrics = metrics
        self._worker = worker
        self._step_started: tuple[BuildStep, float] | None = None
        self._in_history = True  # until the start says otherwise: mirror every change
        self.result = found or BuildResult(id=build_id, image="", submitted_at=utcnow())

    def start(self, image: str) -> None:
        """Running; BuildCancelled if a cancel came first, AlreadyFinished if the build ended meanwhile."""
        running = self.result.model_copy(update={
            "phase": BuildPhase.RUNNING, "image": image, "started_at": utcnow(), "error": None, "step": None,
            "worker": self._worker})
        outcome, self._in_history = self._lifecycle.start(running)
        if outcome == "cancelled":
            raise BuildCancelled("cancelled before it started")
        if outcome == "ended":
            raise AlreadyFinished(f"build {running.id} ended before this delivery started it")
        self.result = running  # no Celery state yet: a build skipped now ends at SUCCESS, which says it all

    def step(self, step: BuildStep) -> None:
        self._end_step()
        self._step_started = (step, time.monotonic())
        self._advance(step=step)
        self.line(f"==> {step.value}")
        self._on_state(step.celery_state, self._meta())

    def line(self, text: str) -> None:
        self._log.append(self.result.id, text)

    def succeed(self, **fields: Any) -> BuildResult:
        return self._finish(BuildPhase.SUCCEEDED, None, **fields)

    def requeue(self, reason: str) -> None:
        """Back to Pending until the retry is delivered (a Running record would count as a lost worker)."""
        self.line(f"transient failure, will retry: {reason}")
        self._advance(phase=BuildPhase.PENDING, step=None)

    def cancel(self) -> BuildResult:
        return self._finish(BuildPhase.CANCELLED, "cancelled on request: nothing was pushed")

    def fail(self, error: str) -> BuildResult:
        return self._finish(BuildPhase.FAILED, f"ERROR: {error}", error=error)

    def _finish(self, phase: BuildPhase, last_line: str | None, **fields: Any) -> BuildResult:
        self._end_step()
        final = self.result.model_copy(update={"phase": phase, "finished_at": utcnow(), **fields})
        self._lifecycle.end(final, last_line=last_line, in_history=self._in_history)
        self.result = final
        return final

    def _end_step(self) -> None:
        if self._step_started and self._metrics:
            step, started = self._step_started
            self._metrics.step_took(step.value, time.monotonic() - started)
        self._step_started = None

    def _advance(self, **fields: Any) -> None:
        self.result = self.result.model_copy(update=fields)
        self._lifecycle.advance(self.result, in_history=self._in_history)

    def _meta(self) -> dict[str, Any]:
        return self.result.model_dump(mode="json")
