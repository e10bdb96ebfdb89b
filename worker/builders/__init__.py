"""Builders: one protocol for turning a rendered build context into an image on the engine, two implementations
(the engine's classic builder, and BuildKit through the Docker CLI), chosen once when a worker process is wired.
Each says which platforms it builds."""

from __future__ import annotations

import logging

from config.settings import Settings
from core.errors import BuilderUnavailable, ConfigurationError
from worker.builders.base import Builder, BuildJob
from worker.builders.buildkit import BuildKitBuilder, find_buildkit_cli
from worker.builders.classic import ClassicBuilder
from worker.engine import engine_platform

__all__ = ["Builder", "BuildJob", "choose_builder"]

logger = logging.getLogger(__name__)


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
