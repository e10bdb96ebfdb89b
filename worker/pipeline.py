"""One build, step by step, in the order of core.phases.BuildStep: check (skip if the target is there), pull,
render, build, push; the build containers are removed whatever happens. A spec that names platforms has a part
per platform in each step (each platform's image is pushed under its own tag), and its target is tagged last, with
an image index naming them all.

The check's HEAD comes before the delivery takes the target's lock: a queued build whose image is there already ends
at once, in one step, and never holds a lock, a heartbeat or a watch (most scheduled and triggered builds)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from config.settings import Settings
from core.errors import BaseLacksPlatform, ImageBuilderError, PlatformUnavailable
from core.phases import BuildStep
from core.platforms import Platform
from core.reference import ImageReference, parse_reference
from core.result import BuildResult, utcnow
from core.spec import ImageSpec
from core.stores.builds import ContainerLedger
from core.tagging import compute_tag, platform_target
from worker.builders import Builder, BuildJob
from worker.credentials import RegistryCredentials, pull_credentials, push_credentials
from worker.dockerfile import BuildInputs, build_context, render_dockerfile
from worker.engine import Engine
from worker.progress import Progress
from worker.registry import RegistrySessions
from worker.watch import BuildWatch

EngineFactory = Callable[..., Engine]
PreviousImage = Callable[[ImageSpec, ImageReference], "str | None"]  # the spec's last successful image, if any


@dataclass
class Part:
    """One platform's image of a build: the only one, for a spec that names no platforms."""

    platform: Platform | None  # None: the engine's own
    target: ImageReference  # the build's target, or that platform's own tag beside it
    base: str = ""  # what FROM names: the spec's base, or its image for this platform pinned by digest
    dockerfile: str = ""


@dataclass
class Run:
    """What one build has found out so far, step by step."""

    spec: ImageSpec
    target: ImageReference
    force: bool
    existing: str | None = None  # the target's digest, if the check found it there
    engine: Engine | None = None
    base_digest: str | None = None  # the base tag's digest (an index's, for a multi-platform base)
    pull_credentials: RegistryCredentials | None = None  # the base's
    parts: list[Part] = field(default_factory=list)
    done: BuildResult | None = None  # set by the step that ends the build: a skip, or the push

    def __post_init__(self) -> None:
        platforms = self.spec.platforms or ()
        self.parts = [Part(p, platform_target(self.target, p)) for p in platforms] or [Part(None, self.target)]


class Pipeline:
    """Runs one spec to its result, reporting through `progress`; raises domain errors only.

    Once begun, a `watch` may stop it between steps and inside engine streams; a `ledger` remembers the build
    containers so that none survives the build, even one left by an earlier delivery that crashed."""

    def __init__(self, settings: Settings, builder: Builder, progress: Progress, registries: RegistrySessions,
                 engine_factory: EngineFactory | None = None, *,
                 previous_image: PreviousImage = lambda spec, target: None):
        self._settings = settings
        self._builder = builder
        self._progress = progress
        self._registries = registries
        self._engine_factory = engine_factory or Engine.connect
        self._previous_image = previous_image
        self._push_credentials = push_credentials(settings)
        self._watch: BuildWatch | None = None
        self._ledger: ContainerLedger | None = None
        self._steps: dict[BuildStep, Callable[[Run], None]] = {
            BuildStep.CHECKING: self._skip_if_there, BuildStep.PULLING: self._pull,
            BuildStep.RENDERING: self._render, BuildStep.BUILDING: self._build, BuildStep.PUSHING: self._push}

    def check(self, run: Run) -> bool:
        """Before the lock: unless forced, HEAD the target; a queued build whose target is there ends here, skipped
        (True). One that is not queued (its earlier delivery was lost) is skipped once begun, by the check step."""
        if not run.force:
            run.existing = self._existing(run)
        if run.existing:
            run.done = self._progress.skip(str(run.target), run.existing, self._skip_line(run))
        else:
            self._check_platforms(run.spec)
        return run.done is not None

    def _check_platforms(self, spec: ImageSpec) -> None:
        """PlatformUnavailable unless this worker builds every platform the spec names."""
        can = self._builder.platforms()
        missing = [p.value for p in spec.platforms or () if p not in can]
        if missing:
            raise PlatformUnavailable(
                f"platforms: this worker does not build {', '.join(missing)} (it builds "
                f"{', '.join(sorted(p.value for p in can)) or 'none of them'}): register qemu-user-static's handler "
                "for it on the engine's host, or name it in IMAGEBUILDER_PLATFORMS for a remote engine that can")

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
        run.engine = self._engine_factory(self._progress.line, timeout_s=self._settings.docker_timeout_s,
                                          check=self._watch.check, on_container=self._ledger.add)
        self._watch.on_abort = run.engine.kill_current
        self._remove_leftovers(run.engine)
        base = parse_reference(run.spec.base_image)
        credentials = run.pull_credentials = pull_credentials(self._settings, run.spec.pull_secret, base.registry)
        if not run.spec.platforms:
            run.parts[0].base = run.spec.base_image
            run.base_digest = run.engine.pull(base, credentials)
            return
        found = self._registries.client(base.registry, credentials).platform_images(base)
        run.base_digest = found.digest
        for part in run.parts:
            part.base = str(_pinned(base, _image_for(part.platform, found.images, base)))
            with _named_for(part):
                run.engine.pull(parse_reference(part.base), credentials, platform=part.platform.value)

    def _render(self, run: Run) -> None:
        for part in run.parts:
            inputs = BuildInputs(
                tag=compute_tag(run.spec), created=utcnow(), base_user=run.engine.image_user(part.base),
                base_digest=run.base_digest or "", ca_bundle=self._settings.build_ca_bundle is not None,
                pip_index_url=self._settings.pip_index_url, buildkit=self._builder.cache_mounts,
                base_image=part.base if part.platform else "",
            )
            part.dockerfile = render_dockerfile(run.spec, inputs)

    def _build(self, run: Run) -> None:
        for part in run.parts:
            with _named_for(part):
                self._build_part(run, part)

    def _build_part(self, run: Run, part: Part) -> None:
        named = f"{part.platform.value}: " if part.platform else ""
        for line in part.dockerfile.splitlines():
            self._progress.line(f"{named}Dockerfile: {line}")
        self._builder.build(run.engine, BuildJob(
            build_context(part.dockerfile, self._settings.build_ca_bundle), str(part.target), run.force,
            self._settings.build_timeout_s, self._progress.line, self._watch.check,
            cache_from=self._cache_sources(run, part) if self._builder.imports_cache else [],
            credentials=[c for c in (self._push_credentials, run.pull_credentials) if c], platform=part.platform))

    def _cache_sources(self, run: Run, part: Part) -> list[str]:
        """The part's target, and the spec's last successful image under another tag (another host may have built
        it), for the same platform."""
        previous = self._previous_image(run.spec, run.target)
        if previous and part.platform:
            previous = str(platform_target(parse_reference(previous), part.platform))
        return [str(part.target), *([previous] if previous else [])]

    def _push(self, run: Run) -> None:
        digests = []
        for part in run.parts:
            with _named_for(part):
                digests.append(run.engine.push(part.target, self._push_credentials))
        digest = self._push_index(run) if run.spec.platforms else digests[0]
        run.done = self._progress.succeed(digest=digest, base_digest=run.base_digest)

    def _push_index(self, run: Run) -> str:
        """Tag the target with an index of every platform's image, pushed under its own tag just before."""
        registry = self._registries.client(run.target.registry, self._push_credentials)
        images = {part.platform: registry.image_descriptor(part.target) for part in run.parts}
        digest = registry.put_index(run.target, images)
        self._progress.line(f"{run.target}: an image index of {', '.join(p.value for p in images)}, digest {digest}")
        return digest

    def _clean_up(self, run: Run) -> None:
        if run.engine is None:
            return
        self._remove_leftovers(run.engine)
        if run.done is None:
            run.engine.remove_step_images()
        run.engine.close()

    def _remove_leftovers(self, engine: Engine) -> None:
        self._ledger.forget(engine.remove_containers(self._ledger.all()))


def _image_for(platform: Platform, images: dict[str, str], base: ImageReference) -> str:
    """The digest of the base's image for `platform`; BaseLacksPlatform naming it and what the base has."""
    if platform.value not in images:
        raise BaseLacksPlatform(f"baseImage: {base} has no {platform.value} image (it has "
                                f"{', '.join(sorted(images)) or 'none named'})")
    return images[platform.value]


def _pinned(base: ImageReference, digest: str) -> ImageReference:
    return ImageReference(base.registry, base.repository, digest=digest)


@contextmanager
def _named_for(part: Part) -> Iterator[None]:
    """A part's failure names its platform (the build's step is on its record already)."""
    try:
        yield
    except ImageBuilderError as e:
        if part.platform is not None and e.args and isinstance(e.args[0], str):
            e.args = (f"{part.platform.value}: {e.args[0]}", *e.args[1:])
        raise
