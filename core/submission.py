"""Submitting a build: the one path shared by the client, the HTTP API and the scheduling pass."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

from celery import Celery

from config.celery_config import (
    BASES_PUSHED_TASK,
    BUILD_QUEUE,
    BUILD_TASK_NAME,
    CHECK_QUEUE,
)
from config.settings import Settings
from core.result import BuildResult, utcnow
from core.spec import ImageSpec
from core.stored import StoredSpec, Trigger
from core.stores.wiring import Stores
from core.tagging import resolve_target

MAX_PUSHED_PER_TASK = 100  # tags one check task takes: the most one notification may name


@dataclass(frozen=True)
class Submission:
    """The build a submission answers with, and whether this submission queued it (else it attached to the
    target's build already queued or running)."""

    build: BuildResult
    queued: bool


class Submitter:
    """Records a build Pending and enqueues it, or attaches to the target's queued or running build."""

    def __init__(self, app: Celery, settings: Settings, stores: Stores, *, answering: bool = True):
        """`answering`: its caller answers someone (the API, the client), who can be told to try again when no
        replica confirms the build in time; the worker's own submissions (schedules, chains) go on, logging it."""
        self._app = app
        self._answering = answering
        self._settings = settings
        self._builds = stores.builds
        self._specs = stores.specs
        self._replicas = stores.replicas

    def submit(self, spec: ImageSpec, *, force: bool) -> BuildResult:
        return self._submission(spec, force=force).build

    def submit_stored(self, stored: StoredSpec, trigger: Trigger, *, force: bool = False) -> BuildResult:
        """Build a stored spec; a new build goes into its history with `trigger`."""
        return self.submission_of_stored(stored, trigger, force=force).build

    def submission_of_stored(self, stored: StoredSpec, trigger: Trigger, *, force: bool = False) -> Submission:
        """`submit_stored`, saying whether this call queued the build."""
        def remember(pending: BuildResult) -> None:
            self._specs.record(stored.spec.name, pending, stored.tag, trigger)

        return self._submission(stored.spec, force=force, before_queueing=remember, kept=True)

    def _submission(self, spec: ImageSpec, *, force: bool,
                    before_queueing: Callable[[BuildResult], None] = lambda pending: None,
                    kept: bool = False) -> Submission:
        submission = self._queued_or_attached(spec, force, before_queueing, kept)
        self._confirm(submission.build)  # an attached build too: the submission that queued it may have been refused
        return submission

    def _queued_or_attached(self, spec: ImageSpec, force: bool, before_queueing: Callable[[BuildResult], None],
                            kept: bool) -> Submission:
        target = resolve_target(spec, self._settings)
        pending = BuildResult(id=str(uuid.uuid4()), image=str(target), submitted_at=utcnow())
        message = {"spec": spec.to_wire(), "force": force}
        build_id = self._builds.submit(pending, message, kept=kept)
        if build_id != pending.id:  # the target is queued or building already (forced or not): attach to it
            return Submission(self._builds.get(build_id), queued=False)
        try:
            before_queueing(pending)
            self._app.send_task(BUILD_TASK_NAME, kwargs=message, task_id=pending.id, queue=BUILD_QUEUE)
        except Exception:  # nothing is queued: nothing may stay in flight for the target
            self._builds.withdraw(pending)
            raise
        return Submission(pending, queued=True)

    def _confirm(self, build: BuildResult) -> None:
        """A build answered with its id survives a failover: a replica holds it (IMAGEBUILDER_REDIS_WAIT_REPLICAS)."""
        if self._answering:
            self._replicas.confirm()
        else:
            self._replicas.confirm_or_log(f"queued build {build.id}")


def send_pushed(app: Celery, pushed: list[str], trigger: Trigger) -> None:
    """Queue the check of the stored specs built on these pushed tags (worker/basewatch.py runs it)."""
    app.send_task(BASES_PUSHED_TASK, kwargs={"pushed": pushed, "trigger": trigger.value}, queue=CHECK_QUEUE)
