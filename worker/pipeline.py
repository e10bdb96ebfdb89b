"""One build, step by step, in the order of core.phases.BuildStep: check (skip if the target is there), pull,
render, build, push, SBOM; the build containers are removed whatever happens. A spec that names platforms is built in
parts, one per platform, by the workers that build each (worker/platformbuild.py): its pull sends them, its build
waits for them, and its push tags the index.

The check's HEAD comes before the delivery takes the target's lock: a queued build whose image is there already ends
at once, in one step, and never holds a lock, a heartbeat or a watch (most scheduled and triggered builds)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from config.settings import Settings
from core.phases import BuildStep
from core.reference import ImageReference, parse_reference
from core.registry.client import RegistrySessions
from core.registry.credentials import pull_credentials, push_credentials
from core.result import BuildResult
from core.spec import ImageSpec
from core.stored import HistoryEntry
from core.stores.builds import ContainerLedger
from core.tagging import staged_target
from worker.builders import Builder, BuildJob
from worker.dockerfile import BuildInputs, build_context, render_dockerfile
from worker.engine import Engine
from worker.platformbuild import PlatformBuild
from worker.progress import Progress
from worker.sbom.step import SbomJob, SbomStep, describe
from worker.watch import BuildWatch

EngineFactory = Callable[..., Engine]
LastSuccess = Callable[[ImageSpec], "HistoryEntry | None"]  # the stored spec's last successful build, if any
LastImage = Callable[[ImageSpec], "str | None"]  # the image of the last successful build under the spec's name


@dataclass
class Run:
    """What one build has found out so far, step by step."""

    spec: ImageSpec
    target: ImageReference
    force: bool
    existing: str | None = None  # the target's digest, if the check found it there
    engine: Engine | None = None
    base_digest: str | None = None
    dockerfile: str = ""
    platform_build: PlatformBuild | None = None  # a multi-platform build's parts, once sent
    pushed: ImageReference | None = None  # where the image went: the target, or its staged tag (SBOM required)
    digest: str | None = None  # of the pushed image (a multi-platform build's: its index's)
    done: BuildResult | None = None  # set by the step that ends the build: a skip, or the SBOM step


class Pipeline:
    """Runs one spec to its result, reporting through `progress`; raises domain errors only.

    Once begun, a `watch` may stop it between steps and inside engine streams; a `ledger` remembers the build
    containers so that none survives the build, even one left by an earlier delivery that crashed."""

    def __init__(self, settings: Settings, builder: Builder, progress: Progress, registries: RegistrySessions,
                 engine_factory: EngineFactory | None = None, *,
                 last_success: LastSuccess = lambda spec: None, last_image: LastImage = lambda spec: None,
                 platform_build: Callable[[Run], PlatformBuild] | None = None):
        self._settings = settings
        self._builder = builder
        self._progress = progress
        self._registries = registries
        self._engine_factory = engine_factory or Engine.connect
        self._last_success = last_success
        self._last_image = last_image
        self._platform_build = platform_build
        self._push_credentials = push_credentials(settings)
        self._sbom = SbomStep(settings, registries)
        self._watch: BuildWatch | None = None
        self._ledger: ContainerLedger | None = None
        self._steps: dict[BuildStep, Callable[[Run], None]] = {
            BuildStep.CHECKING: self._skip_if_there, BuildStep.PULLING: self._pull,
            BuildStep.RENDERING: self._render, BuildStep.BUILDING: self._build, BuildStep.PUSHING: self._push,
            BuildStep.SBOM: self._attach_sbom}

    def check(self, run: Run) -> bool:
        """Before the lock: unless forced, HEAD the target; a queued build whose target is there ends here, skipped
        (True). One that is not queued (its earlier delivery was lost) is skipped once begun, by the check step."""
        if not run.force:
            run.existing = self._existing(run)
        if run.existing:
            run.done = self._progress.skip(str(run.target), run.existing, self._skip_line(run))
        return run.done is not None

    def _existing(self, run: Run) -> str | None:
        """The target's digest if it is there, and, for a spec naming platforms, an index listing every one."""
        registry = self._registries.client(run.target.registry, self._push_credentials)
        digest = registry.manifest_digest(run.target)
        if digest and run.spec.platforms:
            listed = registry.platform_images(run.target).images
            return digest if all(p.value in listed for p in run.spec.platforms) else None
        return digest

    def run(self, run: Run, watch: BuildWatch, ledger: ContainerLedger) -> BuildResult:
        """The build, checked (check) and begun (Progress.begin), run to its end under `watch`, its containers
        kept in `ledger`."""
        self._watch, self._ledger = watch, ledger
        try:
            for step in BuildStep:
                self._enter(step)
                self._steps[step](run)
                if run.done is not None:
                    break
        finally:
            self._clean_up(run)
        return run.done

    def _enter(self, step: BuildStep) -> None:
        self._watch.check()  # a cancelled or timed-out build goes no further, and never pushes
        if step.reported:
            self._progress.step(step)

    def _skip_if_there(self, run: Run) -> None:
        if run.existing:
            run.done = self._progress.succeed(self._skip_line(run), digest=run.existing, skipped=True)

    @staticmethod
    def _skip_line(run: Run) -> str:
        return f"{run.target} exists with digest {run.existing}: nothing to build"

    def _pull(self, run: Run) -> None:
        if run.spec.platforms:
            run.platform_build = self._platform_build(run)
            run.base_digest = run.platform_build.send()
            return
        run.engine = self._engine_factory(self._progress.line, timeout_s=self._settings.docker_timeout_s,
                                          check=self._watch.check, on_container=self._ledger.add)
        self._watch.on_abort = run.engine.kill_current
        self._remove_leftovers(run.engine)
        base = parse_reference(run.spec.base_image)
        run.base_digest = run.engine.pull(base, pull_credentials(self._settings, run.spec.pull_secret, base.registry))

    def _render(self, run: Run) -> None:
        if run.platform_build:
            return  # each part renders its own
        inputs = BuildInputs.of(run.spec, self._settings, buildkit=self._builder.cache_mounts,
                                base_user=run.engine.image_user(run.spec.base_image),
                                base_digest=run.base_digest or "")
        run.dockerfile = render_dockerfile(run.spec, inputs)

    def _build(self, run: Run) -> None:
        if run.platform_build:
            run.platform_build.wait(self._watch)
            return
        for line in run.dockerfile.splitlines():
            self._progress.line(f"Dockerfile: {line}")
        self._builder.build(run.engine, BuildJob(
            build_context(run.dockerfile, self._settings.build_ca_bundle), str(run.target), run.force,
            self._settings.build_timeout_s, self._progress.line, self._watch.check,
            cache_from=self._cache_sources(run) if self._builder.imports_cache else [],
            credentials=[self._push_credentials] if self._push_credentials else []))

    def _cache_sources(self, run: Run) -> list[str]:
        """The target, and the last successful image under the spec's name, stored spec or ad hoc, if another (it
        may have been built on another host)."""
        last = self._last_image(run.spec)
        return [str(run.target), *([last] if last and last != str(run.target) else [])]

    def _push(self, run: Run) -> None:
        if run.platform_build:
            registry = self._registries.client(run.target.registry, self._push_credentials)
            run.digest = run.platform_build.push_index(registry)
            return
        run.pushed = staged_target(run.target) if self._sbom.required else run.target
        if run.pushed != run.target:
            run.engine.tag(str(run.target), run.pushed)
        run.digest = run.engine.push(run.pushed, self._push_credentials)

    def _attach_sbom(self, run: Run) -> None:
        """A single image's SBOM (a multi-platform build's parts attached each of theirs); with it required, the
        target is tagged only now."""
        made = None if run.platform_build else self._sbom.run(run.engine, SbomJob(
            run.spec, str(run.target), run.pushed, run.digest, run.base_digest))
        if made is not None:
            self._progress.line(describe(made.report))
        if run.pushed not in (None, run.target):
            self._sbom.tag_target(run.pushed, run.digest, run.target)
        changes = self._sbom.changes(run.target, run.digest, made and made.document, self._last_success(run.spec))
        if changes is not None:
            self._progress.line(f"changed since build {changes.since}: {changes.summary()}")
        run.done = self._progress.succeed(digest=run.digest, base_digest=run.base_digest,
                                          sbom=made.report if made else None, changes=changes)

    def _clean_up(self, run: Run) -> None:
        if run.platform_build and run.done is None:
            run.platform_build.stop()
        if run.engine is None:
            return
        self._remove_leftovers(run.engine)
        if run.done is None:
            run.engine.remove_step_images()
        run.engine.close()

    def _remove_leftovers(self, engine: Engine) -> None:
        self._ledger.forget(engine.remove_containers(self._ledger.all()))
