"""Builders: one protocol for turning a rendered build context into an image on the engine, two implementations
(the engine's classic builder, and BuildKit through the Docker CLI), chosen once when a worker process is wired.
Each says which platforms it builds."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from config.settings import Settings
from core.errors import BuilderUnavailable, ConfigurationError
from worker.builders.buildkit import BuildKitBuilder, find_buildkit_cli
from worker.builders.classic import ClassicBuilder
from worker.credentials import RegistryCredentials
from worker.engine import Engine, engine_platform

logger = logging.getLogger(__name__)


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
    credentials: list[RegistryCredentials] = field(default_factory=list)  # to read those with


class Builder(Protocol):
    """Builds an image on the engine from a rendered context; only domain errors leave it."""

    cache_mounts: bool  # whether the Dockerfile is rendered with BuildKit's cache mounts for downloads
    imports_cache: bool  # whether it reuses layers of images in the registry (BuildJob.cache_from)

    def platforms(self) -> frozenset[str]:
        """The platforms (`os/arch[/variant]`) it builds for."""

    def build(self, engine: Engine, job: BuildJob) -> str:
        """The new image's id."""


def choose_builder(settings: Settings) -> Builder:
    """The builder IMAGEBUILDER_BUILDER asks for: by default BuildKit wherever a Docker client here runs it, else
    classic; `buildkit` refuses to start without one. Logged, with the reason."""
    platforms = frozenset({engine_platform()})
    if settings.builder == "classic":
        return _chosen(ClassicBuilder(platforms), "as IMAGEBUILDER_BUILDER says")
    try:
        cli = find_buildkit_cli(settings.docker_cli)
    except BuilderUnavailable as e:
        if settings.builder == "buildkit":
            raise ConfigurationError(f"IMAGEBUILDER_BUILDER=buildkit, but {e}") from None
        return _chosen(ClassicBuilder(platforms), f"because {e}", warn=True)
    return _chosen(BuildKitBuilder(cli, platforms), "")


def _chosen(builder: Builder, why: str, *, warn: bool = False) -> Builder:
    (logger.warning if warn else logger.info)("builder: %s%s", builder, f", {why}" if why else "")
    return builder
