"""The shared package caches, for real: Debian's apt-cacher-ng and proxpi (in front of a counting package index) on a
host of their own (devstack/wan.py: a network namespace), on a WAN-like link shaped with tc tbf, whose rate a timed
download checks; BuildKit workers on two engines going through them, what each cache fetched from its
origin and served counted from the caches' own logs and the origin; nothing of them left in an image; and caches
that die mid-way or are down, which builds pass by to the origin."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess

import docker
import pytest

from core.phases import BuildPhase
from devstack.baseimage import DEBIAN_IMAGE
from devstack.packagecaches import AptCache, PipMirror
from devstack.wan import (
    RATE_BITS_S,
    CacheHost,
    outward_address,
    served_blob,
    shaped,
    timed_download_rate,
)
from producer.client import BuildClient
from tests.integration.conftest import start_worker
from tests.integration.helpers import wait_for_line
from tests.integration.pip_index import (
    EXTRA_PROJECT,
    PROJECT,
    VERSION,
    PackageIndex,
    module_of,
)
from tests.integration.test_buildkit import (
    BRIDGE_NAME_OPTION,
    bridge_address,
    build_lines,
)
from tests.integration.test_builds import WAIT_S, pull_back, run_in
from worker.dockerfile import FALLBACK_NOTICE

pytestmark = pytest.mark.integration
PACKAGE_CACHE_DB = 22
SHARED_APT = ["pv", "units"]  # installed by no other test: no engine's download cache holds them before this module
ADDED_APT = "dos2unix"
PROBE_BYTES = 16 << 20


@pytest.fixture(scope="module")
def origin():
    with PackageIndex(bridge_address(), (PROJECT, EXTRA_PROJECT)) as index:
        yield index


@pytest.fixture(scope="module")
def cache_host():
    host = CacheHost().start()
    yield host
    host.stop()


@pytest.fixture(scope="module")
def caches(tmp_path_factory, origin, cache_host, second_engine):
    """apt-cacher-ng and proxpi on a host of their own, which both engines' build containers reach; meanwhile both
    engines' build networks and the caches' own link are WAN-like (the caches' answers to builds are not shaped)."""
    apt = AptCache(tmp_path_factory.mktemp("apt-cache"), cache_host.address, wrap=cache_host.wrap).start()
    pip = PipMirror(tmp_path_factory.mktemp("pip-mirror"), cache_host.address, origin.url + "/",
                    wrap=cache_host.wrap).start()
    try:
        with shaped([default_bridge(), second_engine.bridge], unshaped_from=cache_host.address):
            yield apt, pip
    finally:
        apt.stop()
        pip.stop()


def default_bridge() -> str:
    engine = docker.from_env()
    try:
        return (engine.networks.get("bridge").attrs["Options"] or {}).get(BRIDGE_NAME_OPTION, "docker0")
    finally:
        engine.close()


def test_the_link_is_shaped_to_its_rate_and_the_caches_answer_at_lan_speed(caches, cache_host):
    # Given the shaped link (the caches fixture), a 16 MiB file on an origin and on the caches' host
    with served_blob(outward_address(), PROBE_BYTES) as origin_url, served_blob(
            cache_host.address, PROBE_BYTES, cache_host.wrap) as lan_url:
        # When a container on the first engine downloads each, timing it
        wan = timed_download_rate(None, DEBIAN_IMAGE, origin_url, PROBE_BYTES)
        lan = timed_download_rate(None, DEBIAN_IMAGE, lan_url, PROBE_BYTES)
    # Then the origin's came at the link's rate, the caches' host's well above it
    assert 0.7 * RATE_BITS_S < wan < 1.1 * RATE_BITS_S, wan
    assert lan > 3 * RATE_BITS_S, lan


@contextlib.contextmanager
def worker_on(stack, caches, origin, name: str, **env: str):
    """A client of a BuildKit worker going through `caches`, `origin` its pip index, on the engine `env` names (the
    first by default)."""
    apt, pip = caches
    worker = start_worker(stack, name, PACKAGE_CACHE_DB, IMAGEBUILDER_BUILDER="", IMAGEBUILDER_APT_PROXY=apt.url,
                          IMAGEBUILDER_PIP_MIRROR=pip.url, IMAGEBUILDER_PIP_INDEX_URL=origin.url, **env)
    try:
        with BuildClient(stack.settings(PACKAGE_CACHE_DB)) as client:
            yield client, worker
    finally:
        worker.process.stop()


def spec_of(stack, name: str, apt: list[str], pip: list[str]) -> dict:
    return {"name": name, "baseImage": stack.debian_base, "pullSecret": "private",
            "packages": {"apt": apt, "pip": [f"{project}=={VERSION}" for project in pip]}}


def forget_downloads(host: str | None = None) -> None:
    """Empty the engine's BuildKit download caches (cache mounts), which outlive test sessions on the first engine."""
    subprocess.run(["/usr/bin/docker", *(["-H", host] if host else []), "builder", "prune", "--force", "--filter",
                    "type=exec.cachemount"], check=True, capture_output=True,
                   env={**os.environ, "DOCKER_BUILDKIT": "1"})


def debs(names: list[str], transfers: dict[str, int]) -> dict[str, int]:
    return {file: size for file, size in transfers.items() if file.split("_")[0] in names}


def test_a_new_spec_on_a_fresh_engine_takes_what_another_engine_fetched_from_the_shared_caches(
        stack, caches, origin, second_engine, unique):
    apt, _ = caches
    # Given spec A (apt and pip packages) built through the caches on the first engine, its downloads forgotten there
    forget_downloads()
    with worker_on(stack, caches, origin, f"cache-engine1-{unique}") as (client, _):
        first = client.wait(client.submit(spec_of(stack, f"{unique}-a", SHARED_APT, [PROJECT]), force=True).id,
                            timeout_s=WAIT_S)
    assert first.phase is BuildPhase.SUCCEEDED, first.error
    fetched = debs(SHARED_APT, apt.transfers("I"))
    assert {name.split("_")[0] for name in fetched} >= set(SHARED_APT), apt.transfers("I")
    wheel_downloads = origin.requests[origin.wheel_path_of(PROJECT)]
    assert wheel_downloads == 1, origin.requests
    served_before = sum(debs(SHARED_APT, apt.transfers("O")).values())
    # When spec B, new, sharing those packages and adding one, is built on the second engine, which never fetched any
    with worker_on(stack, caches, origin, f"cache-engine2-{unique}", DOCKER_HOST=second_engine.host) as (client, _):
        submitted = client.submit(spec_of(stack, f"{unique}-b", [*SHARED_APT, ADDED_APT], [PROJECT]), force=True)
        second = client.wait(submitted.id, timeout_s=WAIT_S)
        lines = build_lines(client, submitted.id)
    # Then apt downloaded its packages, but the shared ones came from the cache, not the origin; only the added one
    # was fetched from the origin; and pip took the wheel from the mirror, the origin asked for it no more
    assert second.phase is BuildPhase.SUCCEEDED and second.worker.startswith("cache-engine2"), second.error
    assert any("Need to get " in line and not line.split("Need to get ")[1].startswith("0 B") for line in lines)
    assert debs(SHARED_APT, apt.transfers("I")) == fetched
    assert sum(debs(SHARED_APT, apt.transfers("O")).values()) >= served_before + sum(fetched.values()) * 0.9
    assert debs([ADDED_APT], apt.transfers("I"))
    assert origin.requests[origin.wheel_path_of(PROJECT)] == wheel_downloads, origin.requests
    assert not [line for line in lines if FALLBACK_NOTICE.format(tool="apt") in line]
    # And the image has every package, and nothing of the caches: no file, no setting, no history line names them
    assert_holds_packages_and_nothing_of_the_caches(stack, second.image, caches, [*SHARED_APT, ADDED_APT], [PROJECT])


def assert_holds_packages_and_nothing_of_the_caches(stack, image: str, caches, apt: list[str], pip: list[str]):
    apt_cache, pip_mirror = caches
    pull_back(stack, image)
    assert sorted(run_in(image, f"dpkg-query -W -f='${{Package}}\\n' {' '.join(apt)}").split()) == sorted(apt)
    modules = ", ".join(module_of(project) for project in pip)
    assert run_in(image, f"python3 -c 'import {modules}; print(1)'").strip() == "1"
    # the caches' host address, which nothing in a Debian image names by chance (a bare port number might)
    address = apt_cache.address
    assert pip_mirror.address == address
    found = run_in(image, f"ls /tmp; grep -rIlF '{address}' /etc /root /usr/local /var/lib/apt /usr/lib/python3*/ "
                   "2>/dev/null; apt-config dump | grep -i proxy; pip config list 2>/dev/null; true")
    assert found.strip() == "", found
    engine = docker.from_env()
    try:
        history = json.dumps(engine.api.history(image)) + json.dumps(engine.images.get(image).attrs["Config"])
    finally:
        engine.close()
    assert address not in history, history


def test_an_ad_hoc_resubmission_with_one_more_pip_package_on_another_engine_reuses_the_apt_layer(
        stack, caches, origin, second_engine, unique):
    # Given an ad-hoc build through the caches on the first engine
    spec = spec_of(stack, unique, ["pv"], [PROJECT])
    with worker_on(stack, caches, origin, f"adhoc-engine1-{unique}") as (client, _):
        assert client.wait(client.submit(spec).id, timeout_s=WAIT_S).phase is BuildPhase.SUCCEEDED
    extra_downloads = origin.requests[origin.wheel_path_of(EXTRA_PROJECT)]
    # When it is submitted again under its name with one more pip package, on the second engine
    with worker_on(stack, caches, origin, f"adhoc-engine2-{unique}", DOCKER_HOST=second_engine.host) as (client, _):
        again = client.submit(spec_of(stack, unique, ["pv"], [PROJECT, EXTRA_PROJECT]))
        result = client.wait(again.id, timeout_s=WAIT_S)
        lines = build_lines(client, again.id)
    # Then its apt step came from the first image, and the added package through the mirror
    assert result.phase is BuildPhase.SUCCEEDED and result.worker.startswith("adhoc-engine2"), result.error
    assert any(" CACHED " in f"{line} " and "apt-get" in line for line in lines), lines
    assert origin.requests[origin.wheel_path_of(EXTRA_PROJECT)] == extra_downloads + 1, origin.requests
    pull_back(stack, result.image)
    assert run_in(result.image, f"python3 -c 'import {module_of(EXTRA_PROJECT)}; print(1)'").strip() == "1"


def test_caches_that_die_mid_build_are_passed_by_and_caches_that_are_down_are_said_so_once(
        stack, caches, origin, unique):
    apt, pip = caches
    # Given a worker whose caches answered when its build began, then hang (stopped, their sockets still listening),
    # and an engine with nothing downloaded
    forget_downloads()
    with worker_on(stack, caches, origin, f"cache-dies-{unique}") as (client, worker):
        for cache in (apt, pip):
            os.kill(cache.process.popen.pid, signal.SIGSTOP)
        build_id = client.submit(spec_of(stack, unique, ["pv"], [EXTRA_PROJECT]), force=True).id
        # When each dies while its step waits on it
        wait_for_line(client, build_id, lambda line: line.startswith("#") and "RUN" in line and "apt_install" in line)
        apt.process.kill()
        wait_for_line(client, build_id, lambda line: line.startswith("#") and "RUN" in line and "pip_install" in line)
        pip.process.kill()
        result = client.wait(build_id, timeout_s=WAIT_S)
        lines = build_lines(client, build_id)
        # And two more builds follow while both are down
        later = [client.wait(client.submit(spec_of(stack, unique, ["pv"], [EXTRA_PROJECT]), force=True).id,
                             timeout_s=WAIT_S) for _ in range(2)]
        log = worker.log_text
    # Then the build succeeded from the origin, its log saying so for each tool
    assert result.phase is BuildPhase.SUCCEEDED, result.error
    assert [tool for tool in ("apt", "pip") if any(FALLBACK_NOTICE.format(tool=tool) in line for line in lines)] == [
        "apt", "pip"]
    # And the later builds succeeded without trying the caches, the worker saying once of each that it is down
    assert all(build.phase is BuildPhase.SUCCEEDED for build in later), [build.error for build in later]
    assert [log.count(f"the {tool} package cache at") for tool in ("apt", "pip")] == [1, 1], log
    # (the module's other tests have run: the caches are not started again)
