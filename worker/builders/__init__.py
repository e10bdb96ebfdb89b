"""Builders: one protocol for turning a rendered build context into an image on the engine, two implementations
(the engine's classic builder, and BuildKit through the Docker CLI), chosen once when a worker process is wired.
Each says which platforms it builds."""

from __future__ import annotations

import logging

from config.settings import Settings
from core.errors import BuilderUnavailable, ConfigurationError
from core.platforms import Platform
from worker.builders.base import Builder, BuildJob
from worker.builders.buildkit import BuildKitBuilder, find_buildkit_cli
from worker.builders.classic import ClassicBuilder
from worker.engine import engine_on_this_host, engine_platform
from worker.packagecache import PackageCaches
from worker.platforms import (
    describe,
    emulated_platforms,
    native_platform,
    served_platforms,
)

__all__ = ["Builder", "BuildJob", "choose_builder"]

logger = logging.getLogger(__name__)


def choose_builder(settings: Settings) -> Builder:
    """The builder IMAGEBUILDER_BUILDER asks for: by default BuildKit wherever a Docker client here runs it, else
    classic; `buildkit` refuses to start without one. Logged, with the reason and the platforms it builds: the
    classic builder its engine's own, BuildKit also those the engine's host emulates."""
    native = native_platform(engine_platform())
    if settings.builder == "classic":
        _without_caches(settings)
        return _chosen(ClassicBuilder(_classic_platforms(settings, native)), native, "as IMAGEBUILDER_BUILDER says")
    try:
        cli = find_buildkit_cli(settings.docker_cli)
    except BuilderUnavailable as e:
        if settings.builder == "buildkit":
            raise ConfigurationError(f"IMAGEBUILDER_BUILDER=buildkit, but {e}") from None
        _without_caches(settings)
        return _chosen(ClassicBuilder(_classic_platforms(settings, native)), native, f"because {e}", warn=True)
    platforms = served_platforms(settings.platforms, native, emulated_platforms(),
                                 sees_engine_host=engine_on_this_host())
    return _chosen(BuildKitBuilder(cli, platforms, PackageCaches.of(settings)), native, "")


def _without_caches(settings: Settings) -> None:
    if PackageCaches.of(settings):
        logger.warning("the package caches (IMAGEBUILDER_APT_PROXY, IMAGEBUILDER_PIP_MIRROR) are for BuildKit builds:"
                       " the classic builder installs from the origin")


def _classic_platforms(settings: Settings, native: Platform | None) -> frozenset[Platform]:
    return served_platforms(settings.platforms, native, frozenset(), sees_engine_host=True)


def _chosen(builder: Builder, native: Platform | None, why: str, *, warn: bool = False) -> Builder:
    (logger.warning if warn else logger.info)("builder: %s%s; platforms: %s", builder, f", {why}" if why else "",
                                              describe(builder.platforms(), native))
    return builder
