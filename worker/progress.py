"""Progress of one build on a worker: begins the delivery, moves the build's record through the lifecycle, appends
its log, and mirrors each step as a Celery state."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from core.errors import AlreadyFinished, BuildCancelled
from core.lifecycle import Lifecycle
from core.phases import BuildPhase, BuildStep
from core.result import BuildResult, PlatformPart, utcnow
from core.stores.builds import BuildState
from core.stores.ending import TaskResult
from core.stores.logs import BuildLog
from core.stores.metrics import Metrics

StateSink = Callable[[str, dict[str, Any]], None]
LOCKED = "locked"


class Progress:
    """The worker's writer of one build's record; a raw message with no record yet gets one at its beginning."""

    def __init__(self, build_id: str, state: BuildState, lifecycle: Lifecycle, log: BuildLog, on_state: StateSink,
                 metrics: Metrics | None = None, worker: str | None = None,
                 success: Callable[[], TaskResult | None] = lambda: None):
        """`on_state` mirrors a step as a Celery state; `success` lays out Celery's result of a success, which the
        end writes."""
        self._id = build_id
        self._state = state
        self._lifecycle = lifecycle
        self._log = log
        self._on_state = on_state
        self._metrics = metrics
        self._worker = worker
        self._success = success
        self._delivered_at = utcnow()
        self._step_started: tuple[BuildStep, float] | None = None
        self._result: BuildResult | None = None
        self.lock_token = ""  # the target's lock, held from the beginning until the end lets it go
        self.lost_before = False  # the record said Running: an earlier delivery was lost with its worker
        self.ended = False

    @property
    def result(self) -> BuildResult:
        """The build as this delivery knows it (read from Redis only where it began no build: a refused message)."""
        if self._result is None:
            self._result = self._state.find(self._id) or BuildResult(id=self._id, image="", submitted_at=utcnow())
        return self._result

    def begin(self, image: str, message: dict[str, Any]) -> bool:
        """Take the target's lock and make the build Running, in one step: False if another delivery holds the
        lock; BuildCancelled if a cancel came first, AlreadyFinished if the build ended meanwhile."""
        fields = {"phase": BuildPhase.RUNNING.value, "image": image, "started_at": utcnow().isoformat(),
                  "error": None, "step": None, "worker": self._worker}
        fresh = BuildResult(id=self._id, image=image, submitted_at=utcnow()).model_copy(update={
            "phase": BuildPhase.RUNNING, "started_at": utcnow(), "worker": self._worker})
        token = uuid.uuid4().hex
        begun = self._lifecycle.begin(fresh, fields, token, message)
        if begun.outcome == LOCKED:
            return False
        self._result = begun.record or self._result
        if begun.outcome == "cancelled":
            raise BuildCancelled("cancelled before it started")
        if begun.outcome == "ended":
            raise AlreadyFinished(f"build {self._id} ended before this delivery started it")
        self.lock_token, self.lost_before = token, begun.before is BuildPhase.RUNNING
        return True  # no Celery state yet: a build skipped now ends at SUCCESS, which says it all

    def step(self, step: BuildStep) -> None:
        self._end_step()
        self._step_started = (step, time.monotonic())
        self._advance(step=step)
        self.line(f"==> {step.value}")
        self._on_state(step.celery_state, self._meta())

    def show_parts(self, parts: dict[str, PlatformPart]) -> None:
        """A multi-platform build's parts as they are now, on its record."""
        self._advance(platforms=parts)

    def at_step(self, step: BuildStep | None) -> None:
        """The step the build's end names (a failed part's), written with the end."""
        self._result = self.result.model_copy(update={"step": step})

    def line(self, text: str) -> None:
        self._log.append(self._id, text)

    def succeed(self, last_line: str | None = None, **fields: Any) -> BuildResult:
        return self._finish(BuildPhase.SUCCEEDED, last_line, **fields)

    def skip(self, image: str, digest: str, last_line: str) -> BuildResult | None:
        """End a queued build whose target is there already, in one step and without the lock (nothing is built):
        the final record; None, writing nothing, if the build is not queued (ended, or begun by a delivery that was
        lost); BuildCancelled if a cancel came first."""
        fields = {"phase": BuildPhase.SUCCEEDED, "skipped": True, "digest": digest, "started_at": self._delivered_at,
                  "finished_at": utcnow(), "worker": self._worker, "step": None, "error": None}
        stand_in = BuildResult(id=self._id, image=image, submitted_at=self._delivered_at, **fields)
        final = self._lifecycle.end(stand_in, fields=stand_in.model_dump(mode="json", include=set(fields)),
                                    expected=BuildPhase.PENDING, last_line=last_line, unless_cancelled=True,
                                    task_result=self._success())
        if final is not None:
            self._result, self.ended = final, True
        return final

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
        written = self._lifecycle.end(final, last_line=last_line, lock_token=self.lock_token,
                                      task_result=self._success())  # written by the end only for a success
        self._result, self.ended = written or final, True
        return self._result

    def _end_step(self) -> None:
        if self._step_started and self._metrics:
            step, started = self._step_started
            self._metrics.step_took(step.value, time.monotonic() - started)
        self._step_started = None

    def _advance(self, **fields: Any) -> None:
        self._result = self.result.model_copy(update=fields)
        self._lifecycle.advance(self._result)

    def _meta(self) -> dict[str, Any]:
        return self.result.model_dump(mode="json")
