"""The Celery task `imagebuilder.build`: one delivery of a build message, from re-validation to its outcome.

A delivery may be a duplicate (a redelivery after a lost worker, or a republish by the reaper): a build that
already ended is left as it is, and one that is running elsewhere is retried later behind the target's lock."""

from __future__ import annotations

import logging
from typing import Any

from celery import Task
from celery.exceptions import Ignore, Retry, SoftTimeLimitExceeded

from config.celery_config import (
    BASES_PUSHED_TASK,
    BUILD_QUEUE,
    BUILD_TASK_NAME,
    CHECK_QUEUE,
    PART_TASK_NAME,
    SCHEDULE_PASS_TASK,
)
from config.settings import Settings
from core.app import ImageBuilderCelery
from core.errors import (
    AlreadyFinished,
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
from core.phases import BuildPhase
from core.reference import ImageReference
from core.spec import ImageSpec, parse_spec
from core.stored import HistoryEntry
from core.stores.builds import LOCK_TTL_S, ContainerLedger
from core.tagging import resolve_target
from worker.basewatch import RECHECK_AFTER_S, BaseWatch, recheck_limit, validated_push
from worker.parts import PartOrder, PartRunner
from worker.pipeline import Pipeline, Run
from worker.platformbuild import PlatformBuild
from worker.progress import Progress
from worker.scheduling import SchedulingPass
from worker.taskresult import success_of
from worker.watch import BuildWatch, backoff_s
from worker.wiring import ProcessWiring

logger = logging.getLogger(__name__)
REGISTRY_ERRORS = (RegistryUnavailable, AuthFailed, BaseImageNotFound, PushFailed)
RETURN_VALUE_LOGGED_CHARS = 120  # of a build task's return value in the worker's "succeeded" line


def register_tasks(app: ImageBuilderCelery, wiring: ProcessWiring) -> Task:
    """Register `imagebuilder.build`, `imagebuilder.schedule_pass` and `imagebuilder.bases_pushed` on `app`, bound
    to its Settings and to the process's wiring."""

    # A success's Celery result is written by the build's end (worker/taskresult.py), in the same step as the record;
    # failures and retries Celery stores itself. The return value, the final record, is then only logged: its start
    # (the id and phase) says enough there.
    @app.task(name=BUILD_TASK_NAME, bind=True, queue=BUILD_QUEUE, max_retries=None, throws=(BuildFailed,),
              ignore_result=True, store_errors_even_if_ignored=True, resultrepr_maxsize=RETURN_VALUE_LOGGED_CHARS)
    def build(self: Task, spec: Any = None, force: Any = False) -> dict[str, Any]:
        return Delivery(self, wiring).run(spec, force)

    @app.task(name=SCHEDULE_PASS_TASK, bind=True, queue=CHECK_QUEUE)
    def schedule_pass(self: Task) -> dict[str, int]:
        return SchedulingPass(self.app, self.app.settings, wiring.stores(), wiring.registries()).run()

    @app.task(name=PART_TASK_NAME, bind=True)
    def build_part(self: Task, **message: Any) -> dict[str, Any]:
        return {"claimed": run_part(wiring.platform_wiring(self.app, self.request.hostname).runner, message)}

    rechecks = recheck_limit(app.settings)

    @app.task(name=BASES_PUSHED_TASK, bind=True, queue=CHECK_QUEUE)
    def bases_pushed(self: Task, pushed: Any = None, trigger: Any = None) -> dict[str, int]:
        arguments = validated_push(pushed, trigger)
        if arguments is None:
            return {}
        watch = BaseWatch(self.app, self.app.settings, wiring.stores(), wiring.registries())
        outcomes = watch.run(*arguments)
        again = watch.follow_up(self.request.id, pushed)
        if again and self.request.retries < rechecks:
            logger.info("%s: %s; checking %s again in %s s", BASES_PUSHED_TASK, outcomes, ", ".join(again),
                        RECHECK_AFTER_S)
            raise self.retry(kwargs={"pushed": again, "trigger": trigger}, countdown=RECHECK_AFTER_S,
                             max_retries=rechecks)
        if again:
            watch.give_up(self.request.id, again)
            logger.warning("%s: gave up checking %s again after %s tries", BASES_PUSHED_TASK, ", ".join(again),
                           rechecks)
        return outcomes

    return build


def run_part(runner: PartRunner, message: dict[str, Any]) -> bool:
    """One delivery of a part's order: built here if no one else has claimed it (a duplicate is a no-op); an order
    that is not one this service sends is logged and dropped, never a crash."""
    try:
        order = PartOrder.from_message(message)
    except InvalidSpec as e:
        logger.warning("%s: %s", PART_TASK_NAME, e.message)
        return False
    return runner.claim_and_run(order)


class Delivery:
    """One delivery of one build message."""

    def __init__(self, task: Task, wiring: ProcessWiring):
        stores = wiring.stores()
        self._task = task
        self._wiring = wiring
        self._builder = wiring.builder
        self._registries = wiring.registries()
        self._settings: Settings = task.app.settings
        self._id: str = task.request.id
        self._state = stores.builds
        self._specs = stores.specs
        self._metrics = stores.metrics
        self._progress = Progress(
            self._id, stores.builds, stores.lifecycle, stores.log,
            on_state=lambda state, meta: task.update_state(state=state, meta=meta),
            metrics=stores.metrics, worker=task.request.hostname, success=lambda: success_of(task),
        )

    def run(self, spec: Any, force: Any) -> dict[str, Any]:
        try:
            image_spec, target, forced = self._validate(spec, force)
            return self._build(image_spec, target, forced)
        except Retry:
            raise
        except AlreadyFinished:
            self._already_ended()
        except BuildCancelled:
            self._cancelled()
        except RetryableError as e:
            self._count_registry_error(e)
            self._retry_or_fail(e)
        except ImageBuilderError as e:
            self._count_registry_error(e)
            self._fail(e.message)
        except SoftTimeLimitExceeded:
            self._fail(f"timed out after {self._settings.build_timeout_s} s")
        except Exception as e:  # a bug must still end the build, never leave it Running
            logger.exception("build %s crashed", self._id)  # the details (paths, say) for the worker's log only
            self._fail(f"internal error: {type(e).__name__} (the worker's log has the details)")

    def _count_registry_error(self, error: ImageBuilderError) -> None:
        if isinstance(error, REGISTRY_ERRORS):
            self._metrics.registry_error(type(error).__name__)

    def _validate(self, spec: Any, force: Any) -> tuple[ImageSpec, ImageReference, bool]:
        """Messages from other languages are re-validated like the producer's: `"false"` is not a boolean."""
        image_spec = parse_spec(spec)
        if not isinstance(force, bool):
            raise InvalidSpec(f"force: must be a JSON boolean, got {type(force).__name__}")
        return image_spec, resolve_target(image_spec, self._settings), force

    def _build(self, spec: ImageSpec, target: ImageReference, force: bool) -> dict[str, Any]:
        pipeline = Pipeline(self._settings, self._builder, self._progress, self._registries,
                            last_success=self._last_success, last_image=self._last_image,
                            platform_build=self._platform_build)
        run = Run(spec, target, force)
        if not pipeline.check(run):
            self._build_locked(pipeline, run)
        return run.done.model_dump(mode="json")

    def _build_locked(self, pipeline: Pipeline, run: Run) -> None:
        target = str(run.target)
        if not self._progress.begin(target, {"spec": run.spec.to_wire(), "force": run.force}):
            # another delivery builds this target now: come back when its lock may be free
            raise self._task.retry(countdown=LOCK_TTL_S, max_retries=None)
        token = self._progress.lock_token
        try:
            self._count_lost_deliveries()
            with BuildWatch(self._state, self._id, target, token, self._settings.build_timeout_s) as watch:
                pipeline.run(run, watch, ContainerLedger(self._state, self._id))
        finally:
            if not self._progress.ended:  # the end let go of the lock already
                self._state.let_go(target, token, self._id)

    def _platform_build(self, run: Run) -> PlatformBuild:
        wiring = self._wiring.platform_wiring(self._task.app, self._task.request.hostname)
        return PlatformBuild(wiring, self._progress, self._id, run.spec, run.target, run.force)

    def _last_image(self, spec: ImageSpec) -> str | None:
        """The image of the last successful build under the spec's name, stored spec or ad hoc (for cache sources)."""
        return self._state.last_image(spec.name)

    def _last_success(self, spec: ImageSpec) -> HistoryEntry | None:
        """The stored spec's last successful build (read only when building: for what changed)."""
        found = self._specs.with_last_success([spec.name]).get(spec.name)
        return found[1] if found else None

    def _count_lost_deliveries(self) -> None:
        """A record that was Running means an earlier delivery died with its worker; cap how often that may happen."""
        if not self._progress.lost_before:
            return
        deliveries = self._state.add_lost_delivery(self._id) + 1
        self._progress.line(f"delivery {deliveries}: the worker running this build was lost; starting again")
        if deliveries > self._settings.max_deliveries:
            raise WorkerLost(
                f"the build was delivered {deliveries} times and its worker was lost each time (killed or "
                f"crashed); IMAGEBUILDER_MAX_DELIVERIES is {self._settings.max_deliveries}"
            )

    def _retry_or_fail(self, error: RetryableError) -> None:
        """Raise Celery's Retry after a jittered backoff, or BuildFailed once the attempts are used up."""
        attempt = self._state.add_attempt(self._id)
        if attempt >= self._settings.max_attempts:
            self._fail(f"{error.message} (gave up after {attempt} attempts)")
        delay_s = backoff_s(attempt, base_s=self._settings.retry_backoff_s, cap_s=self._settings.retry_backoff_max_s,
                            retry_after_s=getattr(error, "retry_after_s", None))
        self._progress.requeue(f"{error.message}; attempt {attempt + 1} of {self._settings.max_attempts} "
                               f"in {delay_s:.1f} s")
        raise self._task.retry(countdown=delay_s, max_retries=None)

    def _already_ended(self) -> None:
        """A duplicate delivery, or one whose build was cancelled while queued: leave the outcome as it is."""
        ended = self._state.get(self._id)
        logger.info("build %s already ended %s: delivery ignored", self._id, ended.phase.value)
        if ended.phase is BuildPhase.CANCELLED:
            self._revoke()
        raise Ignore()

    def _cancelled(self) -> None:
        self._progress.cancel()
        self._revoke()
        raise Ignore()

    def _revoke(self) -> None:
        """Celery's own result says REVOKED, for clients that wait on it."""
        self._task.backend.mark_as_revoked(self._id, reason="cancelled", request=self._task.request)

    def _fail(self, message: str) -> None:
        self._progress.fail(message)
        raise BuildFailed(message) from None
