"""One platform's part of a multi-platform build: the order a build sends to that platform's queue, the watch that
keeps its claim alive, and running it (pull that platform's base image by digest, render, build with `--platform`,
push under the target's tag with the platform after it, attach that image's SBOM). A part is built by whichever
worker claims it first: one that took the order from its platform's queue, or the build's own delivery, which takes
parts no one has claimed."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from config.settings import Settings
from core.errors import BuildCancelled, ImageBuilderError, InvalidSpec, RetryableError
from core.phases import BuildPhase, BuildStep
from core.platforms import Platform, parse_platform
from core.reference import ImageReference, parse_reference
from core.registry.credentials import (
    RegistryCredentials,
    pull_credentials,
    push_credentials,
)
from core.result import SbomReport
from core.spec import ImageSpec, parse_spec
from core.stores.builds import BuildState, ContainerLedger
from core.stores.logs import BuildLog
from core.stores.parts import PlatformParts
from core.tagging import platform_target
from worker.builders import Builder, BuildJob
from worker.dockerfile import BuildInputs, build_context, render_dockerfile
from worker.engine import Engine
from worker.sbom.step import SbomJob, SbomStep, describe
from worker.watch import Watch


@dataclass(frozen=True)
class PartOrder:
    """What a part's worker needs: the build, the platform, the spec, and the base's image for that platform."""

    build_id: str
    platform: Platform
    spec: ImageSpec
    target: ImageReference  # the build's target (the index's tag)
    base: str  # the base's image for this platform, pinned by digest
    base_digest: str  # the base tag's own digest (its index's), for the image's label
    force: bool
    deadline: float  # epoch seconds: the build's start plus its time limit

    @property
    def part_target(self) -> ImageReference:
        return platform_target(self.target, self.platform)

    def to_message(self) -> dict[str, Any]:
        return {"build_id": self.build_id, "platform": self.platform.value, "spec": self.spec.to_wire(),
                "target": str(self.target), "base": self.base, "base_digest": self.base_digest,
                "force": self.force, "deadline": self.deadline}

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> PartOrder:
        """The order in a message; InvalidSpec naming what is wrong (a message from elsewhere is checked too)."""
        try:
            return cls(str(message["build_id"]), parse_platform(message["platform"]), parse_spec(message["spec"]),
                       parse_reference(message["target"]), str(parse_reference(message["base"])),
                       str(message["base_digest"]), message["force"] is True, float(message["deadline"]))
        except (KeyError, TypeError, ValueError) as e:
            raise InvalidSpec(f"a part's message is not one this service sends: {type(e).__name__}") from None


@dataclass(frozen=True)
class PartImage:
    """What a part pushed: its image's digest, and that image's SBOM (None when SBOMs are off)."""

    digest: str
    sbom: SbomReport | None


class PartWatch(Watch):
    """The watch of one claimed part: its heartbeat, which also says whether the claim still holds (a part is
    stopped when its build is cancelled, fails elsewhere, or was given up on), the cancel flag and the deadline."""

    def __init__(self, parts: PlatformParts, state: BuildState, order: PartOrder, token: str):
        super().__init__(f"part {order.platform.value} of build {order.build_id}", order.deadline - time.time())
        self._parts, self._state, self._order, self._token = parts, state, order, token

    def keep_alive(self) -> None:
        if not self._parts.beat(self._order.build_id, self._order.platform.value, self._token):
            self.abort(BuildCancelled(f"{self._order.platform.value}: stopped, as its build was"))

    def cancelled(self) -> bool:
        return self._state.cancel_requested(self._order.build_id)


class PartRunner:
    """Runs claimed parts on this worker's engine and builder, reporting each step on the part and each line in the
    build's log (after the platform's name)."""

    def __init__(self, settings: Settings, builder: Builder, parts: PlatformParts, state: BuildState, log: BuildLog,
                 worker: str | None, sbom: SbomStep):
        self._settings = settings
        self._builder = builder
        self._parts, self._state, self._log = parts, state, log
        self._worker = worker
        self._push_credentials = push_credentials(settings)
        self._sbom = sbom

    def claim_and_run(self, order: PartOrder) -> bool:
        """Build the part if this worker can claim it (False if another has it, or it has ended or stopped)."""
        token = self.claim(order)
        if token:
            self.run(order, token)
        return token is not None

    def claim(self, order: PartOrder) -> str | None:
        """The claim's token, if the part was Pending and is this worker's now."""
        token = uuid.uuid4().hex
        return token if self._parts.claim(order.build_id, order.platform.value, token, self._worker) else None

    def run(self, order: PartOrder, token: str) -> None:
        """Build a claimed part to its end (Succeeded, Failed, Cancelled, or given back after a transient failure)."""
        self._line(order, f"==> {order.platform.value} on {self._worker or 'this worker'}")
        try:
            with PartWatch(self._parts, self._state, order, token) as watch:
                image = self._run(order, token, watch)
            self._end(order, token, {"phase": BuildPhase.SUCCEEDED.value, "digest": image.digest, "step": None,
                                     "sbom": image.sbom.model_dump(mode="json") if image.sbom else None})
        except BuildCancelled:
            self._end(order, token, {"phase": BuildPhase.CANCELLED.value})
        except ImageBuilderError as e:
            self._end(order, token, {"phase": BuildPhase.FAILED.value, "error": e.message}, retryable=e)

    def _run(self, order: PartOrder, token: str, watch: PartWatch) -> PartImage:
        ledger = ContainerLedger(self._state, f"{order.build_id}:{order.platform.slug}")
        engine = Engine.connect(lambda line: self._line(order, line), timeout_s=self._settings.docker_timeout_s,
                                check=watch.check, on_container=ledger.add)
        watch.on_abort = engine.kill_current
        try:
            return self._steps(order, token, engine, watch)
        except BaseException:
            engine.remove_step_images()
            raise
        finally:
            ledger.forget(engine.remove_containers(ledger.all()))
            engine.close()

    def _steps(self, order: PartOrder, token: str, engine: Engine, watch: PartWatch) -> PartImage:
        base = parse_reference(order.base)
        credentials = pull_credentials(self._settings, order.spec.pull_secret, base.registry)
        self._step(order, token, BuildStep.PULLING, watch)
        engine.pull(base, credentials, platform=order.platform.value)
        self._step(order, token, BuildStep.RENDERING, watch)
        dockerfile = render_dockerfile(order.spec, self._inputs(order, engine))
        self._step(order, token, BuildStep.BUILDING, watch)
        for line in dockerfile.splitlines():
            self._line(order, f"Dockerfile: {line}")
        self._builder.build(engine, self._job(order, dockerfile, watch, credentials))
        self._step(order, token, BuildStep.PUSHING, watch)
        digest = engine.push(order.part_target, self._push_credentials)
        self._step(order, token, BuildStep.SBOM, watch)
        made = self._sbom.run(engine, SbomJob(order.spec, str(order.part_target), order.part_target, digest,
                                              order.base_digest))
        if made is not None:
            self._line(order, describe(made.report))
        return PartImage(digest, made.report if made else None)

    def _inputs(self, order: PartOrder, engine: Engine) -> BuildInputs:
        return BuildInputs.of(order.spec, self._settings, buildkit=self._builder.cache_mounts,
                              base_user=engine.image_user(order.base), base_digest=order.base_digest,
                              base_image=order.base)

    def _job(self, order: PartOrder, dockerfile: str, watch: PartWatch,
             credentials: RegistryCredentials | None) -> BuildJob:
        return BuildJob(build_context(dockerfile, self._settings.build_ca_bundle), str(order.part_target),
                        order.force, self._settings.build_timeout_s, lambda line: self._line(order, line),
                        watch.check, cache_from=[str(order.part_target)] if self._builder.imports_cache else [],
                        credentials=[c for c in (self._push_credentials, credentials) if c], platform=order.platform)

    def _step(self, order: PartOrder, token: str, step: BuildStep, watch: PartWatch) -> None:
        watch.check()
        if not self._parts.patch(order.build_id, order.platform.value, token, {"step": step.value}):
            raise BuildCancelled(f"{order.platform.value}: stopped, as its build was")
        self._line(order, f"==> {step.value}")

    def _end(self, order: PartOrder, token: str, fields: dict[str, Any],
             retryable: ImageBuilderError | None = None) -> None:
        if isinstance(retryable, RetryableError):  # another try, by whoever claims the part next
            fields = {"phase": BuildPhase.PENDING.value, "error": None, "token": None}
        if fields.get("error"):
            self._line(order, f"ERROR: {fields['error']}")
        self._parts.patch(order.build_id, order.platform.value, token, {"worker": self._worker, **fields}, ended=True)

    def _line(self, order: PartOrder, line: str) -> None:
        self._log.append(order.build_id, f"{order.platform.value}: {line}")
