"""The Celery task `imagebuilder.build`: one delivery of a build message, from re-validation to its outcome.

A delivery may be a duplicate (a redelivery after a lost worker, or a republish by the reaper): a build that
already ended is left as it is, and one that is running elsewhere is retried later behind the target's lock."""

from __future__ import annotations

import logging
from typing import Any

import redis
from celery import Task
from celery.exceptions import Ignore, Retry, SoftTimeLimitExceeded

from config.celery_config import BUILD_QUEUE, BUILD_TASK_NAME, redis_client
from config.settings import Settings
from worker.app import ImageBuilderCelery
from worker.build import Builder
from worker.coordination import LOCK_TTL_S, ContainerLedger, Coordinator
from worker.errors import (
    AuthFailed,
    BaseImageNotFound,
    BuildCancelled,
    BuildFailed,
    ImageBuilderError,
    InvalidSpec,
    PushFailed,
    RegistryUnavailable,
    RetryableError,
    WorkerLost,
)
from worker.logs import BuildLog
from worker.metrics import Metrics
from worker.progress import Progress
from worker.records import BuildRecords
from worker.reference import ImageReference
from worker.result import BuildResult
from worker.scheduling import SCHEDULE_PASS_TASK, SchedulingPass, spec_and_schedule_stores
from worker.spec import ImageSpec, parse_spec
from worker.specstore import SCHEDULED_TRIGGERS
from worker.states import BuildPhase
from worker.tagging import resolve_target
from worker.watch import BuildWatch, backoff_s

logger = logging.getLogger(__name__)
REGISTRY_ERRORS = (RegistryUnavailable, AuthFailed, BaseImageNotFound, PushFailed)


def register_tasks(app: ImageBuilderCelery) -> Task:
    """Register `imagebuilder.build` and `imagebuilder.schedule_pass` on `app`, bound to its Settings."""

    @app.task(name=BUILD_TASK_NAME, bind=True, queue=BUILD_QUEUE, max_retries=None, throws=(BuildFailed,))
    def build(self: Task, spec: Any = None, force: Any = False) -> dict[str, Any]:
        client = redis_client(self.app.settings, patient=True)
        try:
            return Delivery(self, client).run(spec, force)
        finally:
            client.close()

    @app.task(name=SCHEDULE_PASS_TASK, bind=True, queue=BUILD_QUEUE)
    def schedule_pass(self: Task) -> dict[str, int]:
        client = redis_client(self.app.settings, patient=True)
        try:
            return SchedulingPass(self.app, self.app.settings, client).run()
        finally:
            client.close()

    return build


class Delivery:
    """One delivery of one build message."""

    def __init__(self, task: Task, client: redis.Redis):
        self._task = task
        self._settings: Settings = task.app.settings
        self._id: str = task.request.id
        self._coordinator = Coordinator(client, expires_s=self._settings.result_expires_s)
        self._metrics = Metrics(client)
        self._specs, self._schedules = spec_and_schedule_stores(client, self._settings)
        self._progress = Progress(
            self._id,
            BuildRecords(client, expires_s=self._settings.result_expires_s),
            BuildLog(client, max_lines=self._settings.log_max_lines, retention_s=self._settings.log_retention_s),
            on_state=lambda state, meta: task.update_state(state=state, meta=meta),
            metrics=self._metrics, worker=task.request.hostname, on_change=self._history_changed,
        )

    def run(self, spec: Any, force: Any) -> dict[str, Any]:
        if self._progress.result.phase.is_final:
            logger.info("build %s already ended %s: duplicate delivery ignored", self._id, self._progress.result.phase)
            return self._progress.result.model_dump(mode="json")
        try:
            if self._coordinator.cancel_requested(self._id):
                raise BuildCancelled("cancelled before it started")
            image_spec, target, forced = self._validate(spec, force)
            return self._build_locked(image_spec, target, forced)
        except Retry:
            raise
        except BuildCancelled:
            return self._cancelled()
        except RetryableError as e:
            self._count_registry_error(e)
            self._retry_or_fail(e)
        except ImageBuilderError as e:
            self._count_registry_error(e)
            self._fail(e.message)
        except SoftTimeLimitExceeded:
            self._fail(f"timed out after {self._settings.build_timeout_s} s")
        except Exception as e:  # a bug must still end the build, never leave it Running
            logger.exception("build %s crashed", self._id)
            self._fail(f"internal error: {type(e).__name__}: {e}")

    def _history_changed(self, result: BuildResult) -> None:
        """A stored spec's build: mirror it into the history; a scheduled one's end counts for its schedule."""
        entry = self._specs.build_changed(result)
        if entry is not None and entry.phase.is_final and entry.trigger in SCHEDULED_TRIGGERS:
            self._schedules.build_ended(entry.name, succeeded=entry.phase is BuildPhase.SUCCEEDED)

    def _count_registry_error(self, error: ImageBuilderError) -> None:
        if isinstance(error, REGISTRY_ERRORS):
            self._metrics.registry_error(type(error).__name__)

    def _validate(self, spec: Any, force: Any) -> tuple[ImageSpec, ImageReference, bool]:
        """Messages from other languages are re-validated like the producer's: `"false"` is not a boolean."""
        image_spec = parse_spec(spec)
        if not isinstance(force, bool):
            raise InvalidSpec(f"force: must be a JSON boolean, got {type(force).__name__}")
        target = resolve_target(image_spec, self._settings)
        self._coordinator.remember_message(self._id, {"spec": image_spec.to_wire(), "force": force})
        return image_spec, target, force

    def _build_locked(self, spec: ImageSpec, target: ImageReference, force: bool) -> dict[str, Any]:
        token = self._coordinator.acquire(str(target))
        if token is None:  # another delivery builds this target now: come back when its lock may be free
            raise self._task.retry(countdown=LOCK_TTL_S, max_retries=None)
        try:
            self._count_lost_deliveries()
            self._coordinator.adopt(str(target), self._id)
            with BuildWatch(self._coordinator, self._id, str(target), token, self._settings.build_timeout_s) as watch:
                result = Builder(self._settings, self._progress, watch, ContainerLedger(self._coordinator, self._id)
                                 ).run(spec, target, force=force)
            return result.model_dump(mode="json")
        finally:
            self._coordinator.let_go(str(target), token, self._id)
            if self._progress.result.phase.is_final:
                self._coordinator.release(str(target), self._id)

    def _count_lost_deliveries(self) -> None:
        """A record still Running means an earlier delivery died with its worker; cap how often that may happen."""
        if self._progress.result.phase is not BuildPhase.RUNNING:
            return
        deliveries = self._coordinator.count(self._id, "lost") + 1
        self._progress.line(f"delivery {deliveries}: the worker running this build was lost; starting again")
        if deliveries > self._settings.max_deliveries:
            raise WorkerLost(
                f"the build was delivered {deliveries} times and its worker was lost each time (killed or "
                f"crashed); IMAGEBUILDER_MAX_DELIVERIES is {self._settings.max_deliveries}"
            )

    def _retry_or_fail(self, error: RetryableError) -> None:
        """Raise Celery's Retry after a jittered backoff, or BuildFailed once the attempts are used up."""
        attempt = self._coordinator.count(self._id, "attempts")
        if attempt >= self._settings.max_attempts:
            self._fail(f"{error.message} (gave up after {attempt} attempts)")
        delay_s = backoff_s(attempt, base_s=self._settings.retry_backoff_s, cap_s=self._settings.retry_backoff_max_s,
                            retry_after_s=getattr(error, "retry_after_s", None))
        self._progress.requeue(f"{error.message}; attempt {attempt + 1} of {self._settings.max_attempts} "
                               f"in {delay_s:.1f} s")
        raise self._task.retry(countdown=delay_s, max_retries=None)

    def _cancelled(self) -> dict[str, Any]:
        self._progress.cancel()
        self._release()
        self._task.backend.mark_as_revoked(self._id, reason="cancelled", request=self._task.request)
        raise Ignore()

    def _fail(self, message: str) -> None:
        self._progress.fail(message)
        self._release()
        raise BuildFailed(message) from None

    def _release(self) -> None:
        if self._progress.result.image:
            self._coordinator.release(self._progress.result.image, self._id)
