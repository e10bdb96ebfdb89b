"""Platforms: the OCI list, their parts, their queues and their one order."""

import pytest

from core.platforms import Platform, canonical, parse_platform


def test_each_platform_has_its_parts_and_a_queue_name_without_slashes():
    assert (Platform.LINUX_ARM_V7.os, Platform.LINUX_ARM_V7.architecture, Platform.LINUX_ARM_V7.variant) == (
        "linux", "arm", "v7")
    assert Platform.LINUX_ARM64.variant is None
    assert [p.queue for p in (Platform.LINUX_ARM64, Platform.LINUX_ARM_V7)] == ["builds.linux-arm64",
                                                                                  "builds.linux-arm-v7"]


def test_canonical_order_is_by_name_and_a_repeat_is_refused():
    assert canonical([Platform.LINUX_S390X, Platform.LINUX_386, Platform.LINUX_ARM64]) == (
        Platform.LINUX_386, Platform.LINUX_ARM64, Platform.LINUX_S390X)
    with pytest.raises(ValueError, match="linux/386 more than once"):
        canonical([Platform.LINUX_386, Platform.LINUX_386])


@pytest.mark.parametrize("text", ["linux/x86_64", "Linux/amd64", "linux/amd64 ", "windows/amd64", ""])
def test_only_the_oci_names_parse(text):
    with pytest.raises(ValueError, match="a platform is one of linux/386"):
        parse_platform(text)
