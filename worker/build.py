"""One build, step by step: skip if present, pull the base, render, build, push; clean up whatever happens."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from config.settings import Settings
from worker.buildstate import ContainerLedger
from worker.credentials import pull_credentials, push_credentials
from worker.buildkit import BuildKitRun, DockerCli
from worker.dockerfile import REBUILD_ARG, BuildInputs, build_context, render_dockerfile
from worker.engine import Engine
from worker.progress import Progress
from worker.reference import ImageReference, parse_reference
from worker.registry import RegistrySessions
from worker.result import BuildResult, utcnow
from worker.spec import ImageSpec
from worker.states import BuildStep
from worker.tagging import compute_tag
from worker.watch import BuildWatch

EngineFactory = Callable[..., Engine]
PreviousImage = Callable[[ImageSpec, ImageReference], "str | None"]  # the spec's last successful image, if any


class Builder:
    """Runs one spec to its result, reporting through `progress`; raises domain errors only.

    The `watch` may stop it between steps and inside engine streams; the `ledger` remembers the build
    containers so that none survives the build, even one left by an earlier delivery that crashed."""

    def __init__(self, settings: Settings, progress: Progress, watch: BuildWatch, ledger: ContainerLedger,
                 registries: RegistrySessions, engine_factory: EngineFactory | None = None, *,
                 buildkit: DockerCli | None = None, previous_image: PreviousImage = lambda spec, target: None):
        self._settings = settings
        self._buildkit = buildkit
        self._previous_image = previous_image
        self._registries = registries
        self._progress = progress
        self._watch = watch
        self._ledger = ledger
        self._engine_factory = engine_factory or Engine.connect
        self._push_credentials = push_credentials(settings)

    def run(self, spec: ImageSpec, target: ImageReference, *, force: bool) -> BuildResult:
        self._progress.start(str(target))
        if not force:
            existing = self._registries.client(target.registry, self._push_credentials).manifest_digest(target)
            if existing:
                self._progress.line(f"{target} exists with digest {existing}: nothing to build")
                return self._progress.succeed(digest=existing, skipped=True)
        engine = self._engine_factory(self._progress.line, timeout_s=self._settings.docker_timeout_s,
                                      check=self._watch.check, on_container=self._ledger.add)
        self._watch.on_abort = engine.kill_current
        succeeded = False
        try:
            self._remove_leftovers(engine)
            result = self._build_and_push(engine, spec, target, force)
            succeeded = True
            return result
        finally:
            self._remove_leftovers(engine)
            if not succeeded:
                engine.remove_step_images()
            engine.close()

    def _build_and_push(self, engine: Engine, spec: ImageSpec, target: ImageReference, force: bool) -> BuildResult:
        base = parse_reference(spec.base_image)
        self._step(BuildStep.PULLING)
        base_digest = engine.pull(base, pull_credentials(self._settings, spec.pull_secret, base.registry))
        inputs = BuildInputs(
            tag=compute_tag(spec), created=utcnow(), base_user=engine.image_user(spec.base_image),
            base_digest=base_digest or "", ca_bundle=self._settings.build_ca_bundle is not None,
            pip_index_url=self._settings.pip_index_url, buildkit=self._buildkit is not None,
        )
        dockerfile = render_dockerfile(spec, inputs)
        self._step(BuildStep.BUILDING)
        for line in dockerfile.splitlines():
            self._progress.line(f"Dockerfile: {line}")
        context = build_context(dockerfile, self._settings.build_ca_bundle)
        if self._buildkit is None:
            engine.build(context, str(target), nocache=force, timeout_s=self._settings.build_timeout_s)
        else:
            self._buildkit_build(engine, context, spec, target, force)
        self._step(BuildStep.PUSHING)
        digest = engine.push(target, self._push_credentials)
        return self._progress.succeed(digest=digest, base_digest=base_digest)

    def _buildkit_build(self, engine: Engine, context, spec: ImageSpec, target: ImageReference,
                        force: bool) -> None:
        """Inline cache metadata goes into every image; layers come from this engine's cache, else from the
        target and the spec's last successful image in the registry, which another host may have built."""
        sources = [str(target)] + [image for image in (self._previous_image(spec, target),) if image]
        self._progress.line(f"BuildKit through {self._buildkit}; importing cache from {', '.join(sources)}")
        build_args = {"BUILDKIT_INLINE_CACHE": "1"} | ({REBUILD_ARG: uuid.uuid4().hex} if force else {})
        run = BuildKitRun(self._buildkit, str(target), cache_from=sources, build_args=build_args)
        engine.buildkit_build(run, context, [self._push_credentials] if self._push_credentials else [])

    def _step(self, step: BuildStep) -> None:
        self._watch.check()  # a cancelled or timed-out build goes no further, and never pushes
        self._progress.step(step)

    def _remove_leftovers(self, engine: Engine) -> None:
        self._ledger.forget(engine.remove_containers(self._ledger.all()))
