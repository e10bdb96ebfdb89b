"""What every builder is: the one protocol, and the build job it is given."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from core.platforms import Platform
from core.registry.credentials import RegistryCredentials
from worker.engine import Engine


@dataclass(frozen=True)
class BuildJob:
    """One build for a builder: the rendered context (Dockerfile and files), the image to tag, how, and whom to
    tell of each line and to ask whether to go on."""

    context: io.BytesIO
    target: str
    force: bool  # every layer anew
    timeout_s: int
    on_line: Callable[[str], None]
    check: Callable[[], None]  # raises to stop (cancel, timeout)
    cache_from: list[str] = field(default_factory=list)  # images whose layers it may reuse, where it can
    # to read those, and a base BuildKit resolves in its registry (another platform's), with; a later one wins
    credentials: list[RegistryCredentials] = field(default_factory=list)
    platform: Platform | None = None  # None: the engine's own


class Builder(Protocol):
    """Builds an image on the engine from a rendered context; only domain errors leave it."""

    cache_mounts: bool  # whether the Dockerfile is rendered with BuildKit's cache mounts for downloads
    imports_cache: bool  # whether it reuses layers of images in the registry (BuildJob.cache_from)

    def platforms(self) -> frozenset[Platform]:
        """The platforms it takes builds for (a queue each)."""

    def build(self, engine: Engine, job: BuildJob) -> str:
        """The new image's id."""
