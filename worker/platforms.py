"""Which platforms this worker builds: its engine's own, and those the host's kernel runs through a binfmt_misc
handler with the F flag (qemu-user-static), as IMAGEBUILDER_PLATFORMS narrows them."""

from __future__ import annotations

from pathlib import Path

from core.errors import ConfigurationError
from core.platforms import Platform

BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
# qemu-user-static's handler names (/usr/lib/binfmt.d/qemu-*.conf) and the platform each one runs
QEMU_HANDLERS = {"qemu-aarch64": Platform.LINUX_ARM64, "qemu-arm": Platform.LINUX_ARM_V7,
                 "qemu-ppc64le": Platform.LINUX_PPC64LE, "qemu-riscv64": Platform.LINUX_RISCV64,
                 "qemu-s390x": Platform.LINUX_S390X, "qemu-i386": Platform.LINUX_386,
                 "qemu-x86_64": Platform.LINUX_AMD64}


def native_platform(engine_platform: str) -> Platform | None:
    """The engine's own platform, if it is one an image may name."""
    try:
        return Platform(engine_platform)
    except ValueError:
        return None


def emulated_platforms(folder: Path = BINFMT_DIR) -> frozenset[Platform]:
    """The platforms whose qemu handler is registered here, enabled and fixed (F)."""
    return frozenset(platform for name, platform in QEMU_HANDLERS.items() if _fixed_and_enabled(folder / name))


def _fixed_and_enabled(entry: Path) -> bool:
    """Only a handler with the F flag runs inside build containers: its interpreter was opened when it was
    registered, so it need not exist in the container's file system."""
    try:
        lines = entry.read_text().splitlines()
    except OSError:
        return False
    flags = next((line.partition(":")[2].strip() for line in lines if line.startswith("flags:")), "")
    return bool(lines) and lines[0] == "enabled" and "F" in flags


def served_platforms(wanted: list[Platform], native: Platform | None, emulated: frozenset[Platform], *,
                     sees_engine_host: bool) -> frozenset[Platform]:
    """What the worker takes builds for: all it can, or the `wanted` ones (IMAGEBUILDER_PLATFORMS), refused where it
    cannot build them. A worker that does not see its engine's host (a remote engine) trusts `wanted`."""
    can = frozenset({native} if native else set()) | emulated
    if not wanted:
        return can
    if sees_engine_host and (missing := sorted(p.value for p in set(wanted) - can)):
        raise ConfigurationError(
            f"IMAGEBUILDER_PLATFORMS names {', '.join(missing)}, which this worker cannot build: its engine is "
            f"{native.value if native else 'of another platform'}, and the host has no qemu-user-static handler "
            "(with the F flag) for it")
    return frozenset(wanted)


def describe(platforms: frozenset[Platform], native: Platform | None) -> str:
    """`linux/amd64 (native), linux/arm64 (emulated)`, for the worker's start-up log."""
    return ", ".join(f"{p.value} ({'native' if p is native else 'emulated'})"
                     for p in sorted(platforms, key=lambda p: p.value)) or "none"
