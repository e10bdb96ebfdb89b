"""The classic builder: the engine's own, through its API (docker-py)."""

from __future__ import annotations

from core.platforms import Platform
from worker.builders.base import BuildJob
from worker.engine import Engine


class ClassicBuilder:
    """Builds with the engine API; `--force` turns the layer cache off."""

    cache_mounts = False
    imports_cache = False

    def __init__(self, platforms: frozenset[Platform]):
        self._platforms = platforms

    def __str__(self) -> str:
        return "classic (the engine API through docker-py)"

    def platforms(self) -> frozenset[Platform]:
        return self._platforms

    def build(self, engine: Engine, job: BuildJob) -> str:
        return engine.build(job.context, job.target, nocache=job.force, timeout_s=job.timeout_s)
