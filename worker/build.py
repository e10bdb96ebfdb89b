"""One build, step by step: skip if present, pull the base, render, build, push."""

from __future__ import annotations

from collections.abc import Callable

from config.settings import Settings
from worker.credentials import PullSecretStore, RegistryCredentials, push_credentials
from worker.dockerfile import BuildInputs, build_context, render_dockerfile
from worker.engine import Engine
from worker.progress import Progress
from worker.reference import ImageReference, parse_reference
from worker.registry import RegistryClient
from worker.result import BuildResult, utcnow
from worker.spec import ImageSpec
from worker.states import BuildStep
from worker.tagging import compute_tag, resolve_target

EngineFactory = Callable[[Callable[[str], None]], Engine]


class Builder:
    """Runs one spec to its result, reporting through `progress`; raises domain errors only."""

    def __init__(self, settings: Settings, progress: Progress, engine_factory: EngineFactory | None = None):
        self._settings = settings
        self._progress = progress
        self._engine_factory = engine_factory or (
            lambda on_line: Engine.connect(on_line, timeout_s=settings.docker_timeout_s)
        )
        self._push_credentials = push_credentials(settings)

    def run(self, spec: ImageSpec, *, force: bool) -> BuildResult:
        target = resolve_target(spec, self._settings)
        self._progress.start(str(target))
        if not force:
            existing = self._registry(target.registry, self._push_credentials).manifest_digest(target)
            if existing:
                self._progress.line(f"{target} exists with digest {existing}: nothing to build")
                return self._progress.succeed(digest=existing, skipped=True)
        engine = self._engine_factory(self._progress.line)
        try:
            return self._build_and_push(engine, spec, target, force)
        finally:
            engine.close()

    def _build_and_push(self, engine: Engine, spec: ImageSpec, target: ImageReference, force: bool) -> BuildResult:
        base = parse_reference(spec.base_image)
        self._progress.step(BuildStep.PULLING)
        base_digest = engine.pull(base, self._pull_credentials(spec, base))
        inputs = BuildInputs(
            tag=compute_tag(spec), created=utcnow(), base_user=engine.image_user(spec.base_image),
            base_digest=base_digest or "", ca_bundle=self._settings.build_ca_bundle is not None,
            pip_index_url=self._settings.pip_index_url,
        )
        dockerfile = render_dockerfile(spec, inputs)
        self._progress.step(BuildStep.BUILDING)
        for line in dockerfile.splitlines():
            self._progress.line(f"Dockerfile: {line}")
        context = build_context(dockerfile, self._settings.build_ca_bundle)
        engine.build(context, str(target), nocache=force, timeout_s=self._settings.build_timeout_s)
        self._progress.step(BuildStep.PUSHING)
        digest = engine.push(target, self._push_credentials)
        return self._progress.succeed(digest=digest, base_digest=base_digest)

    def _pull_credentials(self, spec: ImageSpec, base: ImageReference) -> RegistryCredentials | None:
        """The named pull secret; else the push user when the base lives on the push registry."""
        if spec.pull_secret:
            return PullSecretStore(self._settings.pull_secrets_dir).credentials(spec.pull_secret, base.registry)
        push = self._push_credentials
        return push if push and push.registry == base.registry else None

    def _registry(self, registry: str, credentials: RegistryCredentials | None) -> RegistryClient:
        return RegistryClient(
            registry, credentials, insecure_registries=frozenset(self._settings.insecure_registries),
            timeout_s=self._settings.registry_timeout_s,
        )
