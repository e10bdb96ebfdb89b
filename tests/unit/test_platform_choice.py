"""A worker's platforms: its engine's own, those the host's binfmt handlers emulate, as IMAGEBUILDER_PLATFORMS
narrows them."""

import pytest

from core.errors import ConfigurationError
from core.platforms import Platform
from worker.platforms import (
    describe,
    emulated_platforms,
    native_platform,
    served_platforms,
)

AMD64, ARM64, ARM_V7 = Platform.LINUX_AMD64, Platform.LINUX_ARM64, Platform.LINUX_ARM_V7


def handler(folder, name, *, enabled=True, flags="POCF"):
    """A binfmt_misc entry as the kernel shows it (qemu-user-static registers these flags)."""
    (folder / name).write_text(f"{'enabled' if enabled else 'disabled'}\ninterpreter /usr/libexec/qemu-binfmt/x\n"
                               f"flags: {flags}\noffset 0\nmagic 7f454c46\nmask ffffffff\n")


def test_only_enabled_handlers_with_the_f_flag_count(tmp_path):
    # Given an F handler for arm64, one without F for arm, a disabled one for s390x, and the kernel's own files
    handler(tmp_path, "qemu-aarch64")
    handler(tmp_path, "qemu-arm", flags="OC")
    handler(tmp_path, "qemu-s390x", enabled=False)
    (tmp_path / "status").write_text("enabled\n")
    (tmp_path / "register").write_text("")
    # Then only arm64 is emulated for builds (the others' interpreters would be missing in a build container)
    assert emulated_platforms(tmp_path) == {ARM64}
    assert emulated_platforms(tmp_path / "not-mounted") == frozenset()


def test_a_worker_serves_all_it_can_unless_the_setting_narrows_it():
    assert served_platforms([], AMD64, frozenset({ARM64}), sees_engine_host=True) == {AMD64, ARM64}
    assert served_platforms([ARM64], AMD64, frozenset({ARM64}), sees_engine_host=True) == {ARM64}
    assert describe(frozenset({ARM64, AMD64}), AMD64) == "linux/amd64 (native), linux/arm64 (emulated)"


def test_a_platform_it_cannot_build_is_refused_at_start_naming_it_unless_the_engine_is_elsewhere():
    with pytest.raises(ConfigurationError, match="IMAGEBUILDER_PLATFORMS names linux/arm/v7, which this worker"):
        served_platforms([ARM_V7, AMD64], AMD64, frozenset({ARM64}), sees_engine_host=True)
    assert served_platforms([ARM_V7], AMD64, frozenset(), sees_engine_host=False) == {ARM_V7}


def test_an_engine_of_a_platform_no_image_names_serves_only_emulated_ones():
    assert native_platform("linux/mips64le") is None and native_platform("linux/arm64") is ARM64
    assert served_platforms([], None, frozenset({ARM64}), sees_engine_host=True) == {ARM64}
