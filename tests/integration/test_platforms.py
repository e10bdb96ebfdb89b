"""Multi-platform images on the real engine, with qemu-user-static's arm64 handler: one tag, an image index in the
registry naming each platform's image, each image running on its platform; skips, a base without a platform, and a
failure on one platform, with nothing tagged."""

from __future__ import annotations

import docker
import pytest
import requests

from core.phases import BuildPhase, BuildStep
from core.spec import parse_spec
from devstack.baseimage import push_two_platform_busybox, push_two_platform_debian
from devstack.stack import PULL_PASSWORD, PULL_USER, PUSH_PASSWORD, PUSH_USER
from producer.client import BuildClient
from tests.integration.conftest import start_worker
from tests.integration.helpers import tags_in_push_registry
from tests.integration.test_builds import WAIT_S
from worker.platforms import emulated_platforms

pytestmark = [pytest.mark.integration, pytest.mark.skipif(
    not any(p.value == "linux/arm64" for p in emulated_platforms()),
    reason="no qemu-user-static arm64 handler with the F flag here (scripts/bootstrap.sh registers one where the "
           "kernel lets it)")]
PLATFORMS_DB = 19
ARM64_DEBIAN_WAIT_S = 1200  # made under emulation, in the background, from the session's start
INDEX_TYPES = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json"


@pytest.fixture(scope="module")
def two_platform_base(stack) -> str:
    """A BusyBox base in the private registry with a linux/amd64 and a linux/arm64 image."""
    reference = f"{stack.private_registry.host}/base/busybox:two-platforms"
    push_two_platform_busybox(docker.from_env(), reference, PULL_USER, PULL_PASSWORD)
    return reference


@pytest.fixture(scope="module")
def two_platform_debian(stack, arm64_debian_rootfs) -> str:
    """A Debian base (python3-pip) in the private registry with a linux/amd64 and a linux/arm64 image."""
    reference = f"{stack.private_registry.host}/base/debian:two-platforms"
    push_two_platform_debian(docker.from_env(), reference, PULL_USER, PULL_PASSWORD,
                             arm64_debian_rootfs.result(timeout=ARM64_DEBIAN_WAIT_S))
    return reference


@pytest.fixture(scope="module")
def platforms_client(stack):
    worker = start_worker(stack, "platforms", PLATFORMS_DB, IMAGEBUILDER_BUILDER="buildkit")
    try:
        with BuildClient(stack.settings(PLATFORMS_DB)) as client:
            yield client
    finally:
        worker.process.stop()


def index_in_registry(stack, image: str) -> dict | None:
    """The image index at `image` in the push registry, read over plain HTTP; None if the tag is not there."""
    repository, tag = image.split("/", 1)[1].rsplit(":", 1)
    answer = requests.get(f"http://{stack.push_registry.host}/v2/{repository}/manifests/{tag}",
                          auth=(PUSH_USER, PUSH_PASSWORD), headers={"Accept": INDEX_TYPES}, timeout=10)
    return answer.json() if answer.status_code == 200 else None


def run_on(stack, image: str, platform: str, command: str) -> str:
    """Pull `image` for `platform` afresh and run `command` in it (under qemu for arm64)."""
    engine = docker.from_env()
    auth = {"username": PUSH_USER, "password": PUSH_PASSWORD, "serveraddress": stack.push_registry.host}
    repository, tag = image.rsplit(":", 1)
    pulled = engine.images.pull(repository, tag=tag, auth_config=auth, platform=platform)
    try:
        # BusyBox has no /etc/passwd for the image's `USER root` to be looked up in
        return engine.containers.run(pulled.id, ["sh", "-c", command], remove=True, platform=platform,
                                     user="0").decode()
    finally:
        engine.images.remove(pulled.id, force=True)


def test_a_two_platform_spec_is_one_tag_whose_index_names_an_image_that_runs_on_each(
        stack, platforms_client, two_platform_base, unique):
    # Given a spec naming arm64 and amd64 (in that order) on a two-platform base
    spec = parse_spec({"name": unique, "baseImage": two_platform_base, "pullSecret": "private",
                       "platforms": ["linux/arm64", "linux/amd64"]})
    # When it is built
    result = platforms_client.wait(platforms_client.submit(spec).id, timeout_s=WAIT_S)
    # Then its one tag is an index naming both platforms, amd64 first, and its digest is the index's
    assert result.phase is BuildPhase.SUCCEEDED, result.error
    index = index_in_registry(stack, result.image)
    assert [(m["platform"]["os"], m["platform"]["architecture"]) for m in index["manifests"]] == [
        ("linux", "amd64"), ("linux", "arm64")]
    # And each platform's image runs as that platform
    assert run_on(stack, result.image, "linux/amd64", "uname -m").strip() == "x86_64"
    assert run_on(stack, result.image, "linux/arm64", "uname -m").strip() == "aarch64"
    # And submitted again unchanged, it is skipped with the index's digest
    again = platforms_client.wait(platforms_client.submit(spec).id, timeout_s=WAIT_S)
    assert again.skipped and again.digest == result.digest


def test_a_base_without_a_named_platform_fails_naming_it_and_tags_nothing(stack, platforms_client, unique):
    # Given a spec naming arm64 and amd64 on a base that is one amd64 image (no index)
    spec = parse_spec({"name": unique, "baseImage": stack.busybox_base, "pullSecret": "private",
                       "platforms": ["linux/amd64", "linux/arm64"]})
    # When it is built
    result = platforms_client.wait(platforms_client.submit(spec).id, timeout_s=WAIT_S)
    # Then it failed pulling, naming the platform and what the base has, and no tag was pushed
    assert result.phase is BuildPhase.FAILED and result.step is BuildStep.PULLING, result
    assert "has no linux/arm64 image (it has linux/amd64)" in result.error
    assert index_in_registry(stack, result.image) is None


def test_a_platform_this_worker_does_not_build_fails_the_build_before_it_begins(stack, platforms_client,
                                                                               two_platform_base, unique):
    # Given a spec naming linux/ppc64le, which no handler here runs
    spec = parse_spec({"name": unique, "baseImage": two_platform_base, "platforms": ["linux/ppc64le"]})
    # When it is built
    result = platforms_client.wait(platforms_client.submit(spec).id, timeout_s=WAIT_S)
    # Then it failed naming the platform and what the worker builds
    assert result.phase is BuildPhase.FAILED and "does not build linux/ppc64le" in result.error
    assert "linux/arm64" in result.error


@pytest.mark.runs_last
def test_apt_and_pip_packages_are_in_each_platforms_image(stack, platforms_client, two_platform_debian, unique):
    # Given a two-platform spec with an apt and a pip package on a two-platform Debian
    spec = parse_spec({"name": unique, "baseImage": two_platform_debian, "pullSecret": "private",
                       "platforms": ["linux/amd64", "linux/arm64"],
                       "packages": {"apt": ["jq"], "pip": ["six==1.17.0"]}})
    # When it is built
    result = platforms_client.wait(platforms_client.submit(spec).id, timeout_s=WAIT_S)
    # Then each platform's image has both packages, built for that platform
    assert result.phase is BuildPhase.SUCCEEDED, result.error
    check = "uname -m; jq --version; python3 -c 'import six; print(six.__version__)'"
    assert run_on(stack, result.image, "linux/amd64", check).split() == ["x86_64", "jq-1.6", "1.17.0"]
    assert run_on(stack, result.image, "linux/arm64", check).split() == ["aarch64", "jq-1.6", "1.17.0"]


@pytest.mark.runs_last
def test_a_step_failing_on_one_platform_fails_the_build_naming_it_and_tags_nothing(
        stack, platforms_client, two_platform_debian, unique):
    # Given a spec with an apt package that Debian builds for amd64 only
    spec = parse_spec({"name": unique, "baseImage": two_platform_debian, "pullSecret": "private",
                       "platforms": ["linux/amd64", "linux/arm64"], "packages": {"apt": ["libc6-i386"]}})
    # When it is built
    result = platforms_client.wait(platforms_client.submit(spec).id, timeout_s=WAIT_S)
    # Then it failed building, naming arm64, and neither the tag nor any platform's image was pushed
    assert result.phase is BuildPhase.FAILED and result.step is BuildStep.BUILDING, result
    assert result.error.startswith("linux/arm64: ") and "libc6-i386" in result.error
    assert index_in_registry(stack, result.image) is None
    assert tags_in_push_registry(stack, result.image.split("/", 1)[1].rsplit(":", 1)[0]) == []
