"""Multi-platform images on the real engine, with qemu-user-static's arm64 handler: one tag, an image index in the
registry naming each platform's image, each image running on its platform; skips, a base without a platform, and a
failure on one platform, with nothing tagged."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable

import docker
import pytest
import requests

from core.app import create_app
from core.phases import BuildPhase, BuildStep
from core.registry.client import registry_sessions
from core.spec import parse_spec
from core.stores.connection import redis_client
from core.stores.wiring import stores_on
from devstack.baseimage import push_two_platform_busybox, push_two_platform_debian
from devstack.stack import PULL_PASSWORD, PULL_USER, PUSH_PASSWORD, PUSH_USER
from producer.client import BuildClient
from tests.integration.conftest import start_worker
from tests.integration.helpers import tags_in_push_registry, wait_for
from tests.integration.test_buildkit import cli_processes
from tests.integration.test_builds import WAIT_S
from tests.integration.test_sbom import sbom_in_registry
from worker.platforms import emulated_platforms
from worker.scheduling import SchedulingPass

pytestmark = [pytest.mark.integration, pytest.mark.skipif(
    not any(p.value == "linux/arm64" for p in emulated_platforms()),
    reason="no qemu-user-static arm64 handler with the F flag here (scripts/bootstrap.sh registers one where the "
           "kernel lets it)")]
PLATFORMS_DB = 19
CLAIM_TIMEOUT_S = 5
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
    worker = start_worker(stack, "platforms", PLATFORMS_DB, IMAGEBUILDER_BUILDER="buildkit",
                          IMAGEBUILDER_PART_CLAIM_TIMEOUT_S=str(CLAIM_TIMEOUT_S))
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


def watch_for_both_running(client: BuildClient, build_id: str) -> threading.Event:
    """An event set once the build's record shows every platform's part Running at once."""
    seen = threading.Event()

    def watch() -> None:
        while not seen.is_set():
            record = client.status(build_id)
            parts = record.platforms or {}
            if len(parts) > 1 and all(part.phase is BuildPhase.RUNNING for part in parts.values()):
                seen.set()
            if record.phase.is_final:
                return
            time.sleep(0.1)

    threading.Thread(target=watch, daemon=True).start()
    return seen


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
    # And each platform's image has an SBOM of its own, attached to it
    for platform, part in result.platforms.items():
        manifest, bom = sbom_in_registry(stack, result.image, part.digest)
        assert part.sbom.digest and manifest["subject"]["digest"] == part.digest, platform
        assert bom["metadata"]["component"]["version"] == part.digest
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


def test_a_platform_no_worker_builds_fails_the_build_when_no_one_takes_its_part(stack, platforms_client,
                                                                               two_platform_base, unique):
    # Given a base whose index also names linux/ppc64le, which no worker here builds (no handler runs it)
    base = with_ppc64le_entry(stack, two_platform_base)
    spec = parse_spec({"name": unique, "baseImage": base, "pullSecret": "private", "platforms": ["linux/ppc64le"]})
    # When it is built
    result = platforms_client.wait(platforms_client.submit(spec).id, timeout_s=WAIT_S)
    # Then it failed once no worker took the part, naming the platform and the queue it waited in
    assert result.phase is BuildPhase.FAILED, result
    assert f"linux/ppc64le: no worker took this part within {CLAIM_TIMEOUT_S} s" in result.error
    assert "builds.linux-ppc64le" in result.error and result.platforms["linux/ppc64le"].phase is BuildPhase.CANCELLED


def with_ppc64le_entry(stack, base: str) -> str:
    """The base's index again, under another tag, with one more entry saying linux/ppc64le (its amd64 image)."""
    ppc64le = {"architecture": "ppc64le", "os": "linux"}
    return index_variant(stack, base, f"{base.rsplit(':', 1)[1]}-ppc64le",
                         lambda entries: [*entries, {**entries[0], "platform": ppc64le}])


@pytest.mark.runs_last
def test_apt_and_pip_packages_are_in_each_platforms_image(stack, platforms_client, two_platform_debian, unique):
    # Given a two-platform spec with an apt and a pip package on a two-platform Debian
    spec = parse_spec({"name": unique, "baseImage": two_platform_debian, "pullSecret": "private",
                       "platforms": ["linux/amd64", "linux/arm64"],
                       "packages": {"apt": ["jq"], "pip": ["six==1.17.0"]}})
    # When it is built, its record watched meanwhile
    build = platforms_client.submit(spec)
    both_running = watch_for_both_running(platforms_client, build.id)
    result = platforms_client.wait(build.id, timeout_s=WAIT_S)
    # Then each platform's part ran at the same time as the other, and the record shows each one's image
    assert result.phase is BuildPhase.SUCCEEDED, result.error
    assert both_running.wait(0), "the two platforms' parts never ran at the same time"
    assert {p: (part.phase, part.digest is not None) for p, part in result.platforms.items()} == {
        "linux/amd64": (BuildPhase.SUCCEEDED, True), "linux/arm64": (BuildPhase.SUCCEEDED, True)}
    # And each platform's image has both packages, built for that platform
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
    # Then it failed building, naming arm64, its part says so, and no index was pushed (amd64's own image may be)
    assert result.phase is BuildPhase.FAILED and result.step is BuildStep.BUILDING, result
    assert result.error.startswith("linux/arm64: ") and "libc6-i386" in result.error
    arm64 = result.platforms["linux/arm64"]
    assert (arm64.phase, arm64.step) == (BuildPhase.FAILED, BuildStep.BUILDING)
    assert index_in_registry(stack, result.image) is None
    tag = result.image.rsplit(":", 1)[1]
    assert tag not in tags_in_push_registry(stack, result.image.split("/", 1)[1].rsplit(":", 1)[0])


def slow_two_platform_spec(base: str, name: str) -> dict:
    """Long enough to be caught with both parts under way: apt over the network, arm64 emulated."""
    return {"name": name, "baseImage": base, "pullSecret": "private", "platforms": ["linux/amd64", "linux/arm64"],
            "packages": {"apt": ["tree", "file"]}}


def parts_of(client: BuildClient, build_id: str) -> dict:
    return {platform: part.phase for platform, part in (client.status(build_id).platforms or {}).items()}


@pytest.mark.runs_last
def test_a_cancel_stops_every_platforms_part_and_tags_nothing(stack, platforms_client, two_platform_debian, unique):
    # Given a two-platform build with both parts under way
    build = platforms_client.submit(slow_two_platform_spec(two_platform_debian, unique), force=True)
    wait_for(lambda: set(parts_of(platforms_client, build.id).values()) == {BuildPhase.RUNNING}, "both parts", 300)
    # When it is cancelled
    platforms_client.cancel(build.id)
    result = platforms_client.wait(build.id, timeout_s=WAIT_S)
    # Then it ended Cancelled with each part stopped, no index was pushed, and no part's client builds on
    assert result.phase is BuildPhase.CANCELLED, result
    assert {part.phase for part in result.platforms.values()} == {BuildPhase.CANCELLED}
    assert index_in_registry(stack, result.image) is None
    wait_for(lambda: not cli_processes(result.image), "every part's docker build to stop", 30)


@pytest.mark.runs_last
def test_a_worker_lost_on_one_platform_has_that_part_built_again_and_the_build_succeeds(
        stack, platforms_client, two_platform_debian, unique):
    # Given a two-platform build whose arm64 part is being built
    build = platforms_client.submit(slow_two_platform_spec(two_platform_debian, unique), force=True)
    arm64_target = f"{platforms_client.status(build.id).image}-linux-arm64"
    wait_for(lambda: cli_processes(arm64_target), "the arm64 part's docker build", 300)
    # When the process building it is killed (SIGKILL: no chance to say so)
    for client_process in cli_processes(arm64_target):
        os.kill(int((client_process / "stat").read_text().split()[3]), signal.SIGKILL)
    # Then that part is taken back and built again, and the build succeeds with an index of both
    result = platforms_client.wait(build.id, timeout_s=WAIT_S)
    assert result.phase is BuildPhase.SUCCEEDED, result.error
    assert result.platforms["linux/arm64"].attempts >= 2 and result.platforms["linux/amd64"].attempts == 1
    assert len(index_in_registry(stack, result.image)["manifests"]) == 2


def test_a_chain_child_naming_no_platforms_is_built_for_its_upstreams(stack, platforms_client, two_platform_base,
                                                                     unique):
    # Given a stored two-platform spec, built
    _, first = platforms_client.specs.apply({"name": f"{unique}-up", "baseImage": two_platform_base,
                                             "pullSecret": "private", "platforms": ["linux/amd64", "linux/arm64"]})
    upstream = platforms_client.wait(first.id, timeout_s=WAIT_S)
    assert upstream.succeeded, upstream.error
    # When a spec naming no platforms is applied on its image
    stored, build = platforms_client.specs.apply({"name": f"{unique}-child", "baseImage": upstream.image})
    child = platforms_client.wait(build.id, timeout_s=WAIT_S)
    # Then it is built for both platforms, under a tag that covers them, and says where they came from
    assert child.succeeded, child.error
    assert stored.platforms_from == f"{unique}-up" and set(child.platforms) == {"linux/amd64", "linux/arm64"}
    index = index_in_registry(stack, child.image)
    assert sorted(m["platform"]["architecture"] for m in index["manifests"]) == ["amd64", "arm64"]
    assert child.image.endswith(f":{stored.tag}")


def test_a_scheduling_pass_rebuilds_a_two_platform_spec_when_its_bases_index_changes(
        stack, platforms_client, two_platform_base, unique):
    # Given a stored two-platform spec, built once on its own copy of the two-platform base, checked every second
    base = index_variant(stack, two_platform_base, f"{unique}-base", list)
    _, first = platforms_client.specs.apply({"name": unique, "baseImage": base, "pullSecret": "private",
                                             "platforms": ["linux/amd64", "linux/arm64"]})
    assert platforms_client.wait(first.id, timeout_s=WAIT_S).succeeded
    platforms_client.schedules.set(unique, every_s=1)
    settings = stack.settings(PLATFORMS_DB)
    scheduling_pass = SchedulingPass(create_app(settings), settings, stores_on(redis_client(settings), settings),
                                     registry_sessions(settings))
    # When a pass runs with the base's index unchanged, and again once the index is another (its entries reversed)
    unchanged = scheduling_pass.run(now=time.time() + 5)
    index_variant(stack, two_platform_base, f"{unique}-base", lambda entries: entries[::-1])
    changed = scheduling_pass.run(now=time.time() + 10)
    # Then the first pass built nothing, and the second rebuilt it: the index's digest is what it compares
    assert unchanged == {"unchanged": 1} and changed == {"base-changed": 1}


def index_variant(stack, base: str, tag: str, change: Callable[[list], list]) -> str:
    """The base's index under another tag of its repository, its entries changed by `change`."""
    repository, old_tag = base.split("/", 1)[1].rsplit(":", 1)
    url = f"http://{stack.private_registry.host}/v2/{repository}/manifests"
    auth = (PULL_USER, PULL_PASSWORD)
    index = requests.get(f"{url}/{old_tag}", auth=auth, headers={"Accept": INDEX_TYPES}, timeout=10).json()
    index["manifests"] = change(index["manifests"])
    requests.put(f"{url}/{tag}", json=index, auth=auth, timeout=10,
                 headers={"Content-Type": index["mediaType"]}).raise_for_status()
    return f"{base.rsplit(':', 1)[0]}:{tag}"
