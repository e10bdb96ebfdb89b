"""Platforms (`os/arch[/variant]`): the ones an image may be built for, their canonical order, and their queues."""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum

PLATFORM_QUEUE_PREFIX = "builds."  # a platform's builds go to `builds.linux-arm64`, taken by workers that build it


class Platform(str, Enum):
    """The platforms the OCI image spec lists for Linux images; a spec names some of these or none."""

    LINUX_386 = "linux/386"
    LINUX_AMD64 = "linux/amd64"
    LINUX_ARM_V7 = "linux/arm/v7"
    LINUX_ARM64 = "linux/arm64"
    LINUX_PPC64LE = "linux/ppc64le"
    LINUX_RISCV64 = "linux/riscv64"
    LINUX_S390X = "linux/s390x"

    @property
    def os(self) -> str:
        return self.value.split("/")[0]

    @property
    def architecture(self) -> str:
        return self.value.split("/")[1]

    @property
    def variant(self) -> str | None:
        parts = self.value.split("/")
        return parts[2] if len(parts) > 2 else None

    @property
    def slug(self) -> str:
        """`linux-arm-v7`: the name where no '/' may go (a queue, a tag)."""
        return self.value.replace("/", "-")

    @property
    def queue(self) -> str:
        """The Celery queue of this platform's builds."""
        return PLATFORM_QUEUE_PREFIX + self.slug


KNOWN_PLATFORMS = ", ".join(p.value for p in Platform)


def parse_platform(text: str) -> Platform:
    """The platform `text` names exactly; ValueError naming the rule otherwise."""
    try:
        return Platform(text)
    except ValueError:
        raise ValueError(f"a platform is one of {KNOWN_PLATFORMS}") from None


def canonical(platforms: Iterable[Platform]) -> tuple[Platform, ...]:
    """`platforms` in the one order that tags and indexes use (by name); ValueError if one is named twice."""
    ordered = sorted(platforms, key=lambda p: p.value)
    twice = sorted({p.value for p in ordered if ordered.count(p) > 1})
    if twice:
        raise ValueError(f"each platform is named once ({', '.join(twice)} more than once)")
    return tuple(ordered)
