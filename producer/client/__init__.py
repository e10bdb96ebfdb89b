"""The Python client: one part per resource (builds, specs, schedules, the service's state, webhook pushes,
SBOMs) over one wiring, and the documented build calls (submit, status, wait, logs, cancel) on the client itself.
It never imports docker, and nothing reaches through it to Redis."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from config.settings import Settings
from core.result import BuildResult
from core.spec import ImageSpec
from producer.client.builds import Builds
from producer.client.hooks import Hooks
from producer.client.operations import ServiceState
from producer.client.sboms import Sboms
from producer.client.schedules import Schedules
from producer.client.specs import Specs
from producer.client.wiring import ClientWiring


class BuildClient:
    """`builds`, `specs`, `schedules`, `service`, `hooks` and `sboms`, over one Celery app and one Redis pool."""

    def __init__(self, settings: Settings):
        self._settings = settings
        self._wiring = ClientWiring.of(settings)
        self.builds = Builds(self._wiring)
        self.specs = Specs(self._wiring)
        self.schedules = Schedules(self._wiring)
        self.service = ServiceState(self._wiring)
        self.hooks = Hooks(self._wiring)
        self.sboms = Sboms(self._wiring)

    def __repr__(self) -> str:
        return f"BuildClient(settings={self._settings!r})"

    def submit(self, spec: ImageSpec | Mapping[str, Any], *, force: bool = False) -> BuildResult:
        return self.builds.submit(spec, force=force)

    def status(self, build_id: str) -> BuildResult:
        return self.builds.status(build_id)

    def wait(self, build_id: str, *, timeout_s: float | None = None) -> BuildResult:
        return self.builds.wait(build_id, timeout_s=timeout_s)

    def logs(self, build_id: str, *, follow: bool = False) -> Iterator[str]:
        return self.builds.logs(build_id, follow=follow)

    def cancel(self, build_id: str) -> BuildResult:
        return self.builds.cancel(build_id)

    def close(self) -> None:
        self._wiring.close()

    def __enter__(self) -> BuildClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
