"""BuildKit builds through the Docker CLI on the real engine: the default builder, download caches kept out of the
image, inline cache imported from the registry, failing steps, and a cancel that stops the client and its build."""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import signal
import socket
import struct
import subprocess
from pathlib import Path

import docker
import pytest

from core.phases import BuildPhase
from devstack.stack import PUSH_PASSWORD
from producer.client import BuildClient
from tests.integration.conftest import start_worker
from tests.integration.helpers import all_containers, wait_for, wait_for_line
from tests.integration.pip_index import MODULE, PROJECT, VERSION, PackageIndex
from tests.integration.test_builds import WAIT_S, pull_back, run_in
from tests.integration.test_delivery import slow_spec

pytestmark = pytest.mark.integration
BUILDKIT_DB = 17
ENGINES_DB = 18  # one worker at a time, on either engine, sharing the spec's history
BRIDGE_NAME_OPTION = "com.docker.network.bridge.name"
SIOCGIFADDR = 0x8915  # Linux's ioctl for an interface's IPv4 address (linux/sockios.h)


@pytest.fixture(scope="module")
def buildkit_worker(stack):
    worker = start_worker(stack, "buildkit", BUILDKIT_DB, IMAGEBUILDER_BUILDER="")  # the default: BuildKit if it can
    yield worker
    worker.process.stop()


@pytest.fixture
def bk_client(stack, buildkit_worker):
    with BuildClient(stack.settings(BUILDKIT_DB)) as client:
        yield client


@contextlib.contextmanager
def worker_on(stack, engine: str, unique: str, **env: str):
    """A client of a BuildKit worker of its own (on its own Redis database), on the engine `env` names."""
    worker = start_worker(stack, f"{engine}-{unique}", ENGINES_DB, IMAGEBUILDER_BUILDER="", **env)
    try:
        with BuildClient(stack.settings(ENGINES_DB)) as client:
            yield client
    finally:
        worker.process.stop()


def engine_containers(host: str | None) -> set[str]:
    """Every container on the engine at `host` (None: the default engine), running or not."""
    engine = docker.DockerClient(base_url=host) if host else docker.from_env()
    try:
        return {container.id for container in engine.containers.list(all=True)}
    finally:
        engine.close()


def build_lines(client: BuildClient, build_id: str) -> list[str]:
    return list(client.logs(build_id))


def cli_processes(tag: str) -> list[Path]:
    """/proc entries of running `docker build` clients for images named `tag` (any tag of it)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"build" in command and any(part.startswith(tag.encode()) for part in command):
            found.append(entry)
    return found


def test_by_default_the_worker_builds_with_buildkit_and_says_which_client(buildkit_worker):
    # Given a worker started without IMAGEBUILDER_BUILDER on a machine whose first `docker` may lack buildx
    # Then it chose BuildKit and named the client it runs
    line = next(line for line in buildkit_worker.log_text.splitlines() if "builder:" in line)
    assert "builder: BuildKit through /" in line and "(client " in line, line


def test_packages_install_from_download_caches_that_stay_out_of_the_image(stack, bk_client, unique):
    # Given a spec with an apt and a pip package
    spec = {"name": unique, "baseImage": stack.debian_base, "pullSecret": "private",
            "packages": {"apt": ["jq"], "pip": ["six==1.17.0"]}}
    # When it is built (forced, so its steps run even if the engine has their layers), then rebuilt with --force
    first = bk_client.wait(bk_client.submit(spec, force=True).id, timeout_s=WAIT_S)
    forced = bk_client.submit(spec, force=True)
    again = bk_client.wait(forced.id, timeout_s=WAIT_S)
    # Then both succeeded through BuildKit, and the image has both packages and no downloaded archive in it
    assert first.phase is BuildPhase.SUCCEEDED, first.error
    assert again.phase is BuildPhase.SUCCEEDED and not again.skipped, again.error
    pull_back(stack, again.image)
    assert run_in(again.image, "jq --version").startswith("jq-")
    assert run_in(again.image, "python3 -c 'import six; print(six.__version__)'").strip() == "1.17.0"
    leftovers = run_in(again.image, "find /var/cache/apt /var/lib/apt/lists /var/cache/imagebuilder /root/.cache "
                                    "-type f 2>/dev/null | grep -v -e '/lock$' || true")
    assert leftovers.strip() == "", leftovers
    # And the forced rebuild ran every step again but downloaded no apt package: they were in the cache mount
    # (pip's own cache is mounted too; it keeps what the index lets it cache, which a TLS-intercepting proxy may not)
    lines = build_lines(bk_client, forced.id)
    assert any("BuildKit through" in line for line in lines)
    assert not [line for line in lines if " CACHED " in f"{line} " and "RUN" in line], lines
    assert any("Need to get 0 B/" in line for line in lines), [line for line in lines if "Need to get" in line]


def bridge_address() -> str:
    """The host's IPv4 address on the engine's default bridge, which its build containers reach. A dockerd
    started without --bip (Debian's, as the demo starts it) reports only the bridge's Subnet, no Gateway: then
    it is the address of the bridge's own interface."""
    engine = docker.from_env()
    try:
        bridge = engine.networks.get("bridge").attrs
    finally:
        engine.close()
    gateways = [entry["Gateway"] for entry in bridge["IPAM"]["Config"] or []
                if entry.get("Gateway") and ipaddress.ip_address(entry["Gateway"]).version == 4]
    return gateways[0] if gateways else interface_ipv4((bridge["Options"] or {}).get(BRIDGE_NAME_OPTION, "docker0"))


def interface_ipv4(name: str) -> str:
    """The IPv4 address of the network interface `name`, asked of the kernel (no `ip` binary needed: a fresh
    Debian may lack iproute2)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        answer = fcntl.ioctl(probe.fileno(), SIOCGIFADDR, struct.pack("256s", name.encode()))
    return socket.inet_ntoa(answer[20:24])  # struct ifreq: 16 bytes of name, then a sockaddr_in


def test_pip_takes_a_wheel_it_downloaded_once_from_its_cache_when_the_index_lets_it(stack, unique):
    # Given a package index on the engine's bridge that serves a wheel as PyPI does (cacheable, immutable), and a
    # BuildKit worker that installs from it
    gateway = bridge_address()
    spec = {"name": unique, "baseImage": stack.debian_base, "pullSecret": "private",
            "packages": {"pip": [f"{PROJECT}=={VERSION}"]}}
    with PackageIndex(gateway) as index, worker_on(stack, "pip-index", unique,
                                                    IMAGEBUILDER_PIP_INDEX_URL=index.url) as client:
        # When the spec is built, then built again with --force (every step runs again)
        first = client.wait(client.submit(spec, force=True).id, timeout_s=WAIT_S)
        downloads_first = index.requests[index.wheel_path]
        again = client.wait(client.submit(spec, force=True).id, timeout_s=WAIT_S)
    # Then the first build downloaded the wheel once, and the forced rebuild did not download it again
    assert first.phase is BuildPhase.SUCCEEDED and again.phase is BuildPhase.SUCCEEDED, (first.error, again.error)
    assert downloads_first == 1 and index.requests[index.wheel_path] == 1, index.requests
    # And the rebuilt image has the package, and no pip cache inside it
    pull_back(stack, again.image)
    assert run_in(again.image, f"python3 -c 'import {MODULE}; print({MODULE}.VERSION)'").strip() == VERSION
    assert run_in(again.image, "find /root/.cache -type f 2>/dev/null || true").strip() == ""


def test_another_engine_reuses_the_apt_layer_when_one_pip_package_is_added(stack, second_engine, unique):
    # Given a stored spec with apt and pip packages, built and pushed by a worker on the first engine
    spec = {"name": unique, "baseImage": stack.debian_base, "pullSecret": "private",
            "packages": {"apt": ["jq"], "pip": ["six==1.17.0"]}}
    with worker_on(stack, "engine1", unique) as client:
        _, build = client.specs.apply(spec)
        assert client.wait(build.id, timeout_s=WAIT_S).phase is BuildPhase.SUCCEEDED
    # When one pip package is added, and a worker on the second engine, which never built it, builds it
    with worker_on(stack, "engine2", unique, DOCKER_HOST=second_engine.host) as client:
        _, edited = client.specs.apply({**spec, "packages": {"apt": ["jq"], "pip": ["six==1.17.0", "idna==3.10"]}})
        result = client.wait(edited.id, timeout_s=WAIT_S)
        lines = build_lines(client, edited.id)
    # Then the apt step came from the first build's image in the registry, and the image holds every package
    assert result.phase is BuildPhase.SUCCEEDED and result.worker.startswith("engine2"), result
    assert any(" CACHED " in f"{line} " and "apt-get" in line for line in lines), lines
    pull_back(stack, result.image)
    assert run_in(result.image, "jq --version").startswith("jq-")
    assert run_in(result.image, "python3 -c 'import six, idna; print(idna.__version__)'").strip() == "3.10"
    # And the second engine ran no container that is left
    assert docker.DockerClient(base_url=second_engine.host).containers.list(all=True) == []


def test_an_ad_hoc_build_on_another_engine_reuses_the_apt_layer_of_the_last_build_under_its_name(
        stack, second_engine, unique):
    # Given an ad-hoc build (no stored spec) with apt and pip packages, built and pushed on the first engine
    spec = {"name": unique, "baseImage": stack.debian_base, "pullSecret": "private",
            "packages": {"apt": ["jq"], "pip": ["six==1.17.0"]}}
    with worker_on(stack, "engine1", unique) as client:
        assert client.wait(client.submit(spec).id, timeout_s=WAIT_S).phase is BuildPhase.SUCCEEDED
    # When it is submitted again under the same name with one more pip package (another tag), on the second engine
    with worker_on(stack, "engine2", unique, DOCKER_HOST=second_engine.host) as client:
        again = client.submit({**spec, "packages": {"apt": ["jq"], "pip": ["six==1.17.0", "idna==3.10"]}})
        result = client.wait(again.id, timeout_s=WAIT_S)
        lines = build_lines(client, again.id)
    # Then its apt step came from the first image in the registry, and it holds every package
    assert result.phase is BuildPhase.SUCCEEDED and result.worker.startswith("engine2"), result
    assert any(" CACHED " in f"{line} " and "apt-get" in line for line in lines), lines
    pull_back(stack, result.image)
    assert run_in(result.image, "python3 -c 'import six, idna; print(idna.__version__)'").strip() == "3.10"


def test_a_failing_run_step_is_fatal_and_says_which_command_and_why(stack, bk_client, unique):
    # Given a spec whose apt package does not exist
    spec = {"name": unique, "baseImage": stack.debian_base, "pullSecret": "private",
            "packages": {"apt": ["no-such-package-here"]}}
    # When it is built
    result = bk_client.wait(bk_client.submit(spec).id, timeout_s=WAIT_S)
    # Then it failed at once (no retry), naming the command, with apt's own words among the last lines
    assert result.phase is BuildPhase.FAILED
    assert "build step failed" in result.error and "apt-get" in result.error, result.error
    assert "Unable to locate package no-such-package-here" in result.error, result.error


def test_cancel_stops_the_client_and_its_build_and_no_credential_is_on_its_command_line(stack, bk_client, unique):
    # Given a long BuildKit build, caught while apt runs
    containers_before = all_containers()
    build_id = bk_client.submit(slow_spec(stack, unique, heavy=True), force=True).id
    wait_for_line(bk_client, build_id, lambda line: "apt-get" in line and line.startswith("#"))
    (client_process,) = cli_processes(f"{stack.push_registry.host}/team/{unique}")
    command_line = (client_process / "cmdline").read_bytes() + (client_process / "environ").read_bytes()
    # When it is cancelled
    bk_client.cancel(build_id)
    result = bk_client.wait(build_id, timeout_s=WAIT_S)
    # Then it ended Cancelled, the client is gone, and so is the build it ran: no apt process, no container
    assert result.phase is BuildPhase.CANCELLED
    wait_for(lambda: not cli_processes(f"{stack.push_registry.host}/team/{unique}"), "the client to exit", 10)
    wait_for(lambda: b"build-essential" not in subprocess.run(["ps", "-eo", "args"], capture_output=True).stdout,
             "the build's apt-get to stop", 30)
    assert all_containers() <= containers_before
    # And the push credentials were never on its command line or in its environment
    assert PUSH_PASSWORD.encode() not in command_line


def test_a_pool_process_killed_mid_build_takes_its_client_along_and_the_build_is_redelivered(
        stack, bk_client, buildkit_worker, unique):
    # Given a BuildKit build whose RUN step is under way
    build_id = bk_client.submit(slow_spec(stack, unique), force=True).id
    wait_for_line(bk_client, build_id, lambda line: "apt-get" in line and line.startswith("#"))
    assert cli_processes(f"{stack.push_registry.host}/team/{unique}")
    # When the worker's pool processes are SIGKILLed
    for child in buildkit_worker.pool_children():
        os.kill(child, signal.SIGKILL)
    # Then the client they started dies with them, and the build is delivered again and succeeds
    wait_for(lambda: not cli_processes(f"{stack.push_registry.host}/team/{unique}"), "the orphaned client to die", 10)
    assert bk_client.wait(build_id, timeout_s=WAIT_S).phase is BuildPhase.SUCCEEDED


def test_a_second_spec_sharing_apt_packages_downloads_only_what_it_adds(stack, bk_client, unique):
    # Given a spec whose apt package was downloaded on this engine by another spec's build (forced builds both:
    # their steps run even where the engine has the layers)
    first = bk_client.wait(bk_client.submit({"name": f"{unique}-a", "baseImage": stack.debian_base,
                                             "pullSecret": "private", "packages": {"apt": ["bc"]}}, force=True).id,
                           timeout_s=WAIT_S)
    assert first.phase is BuildPhase.SUCCEEDED, first.error
    # When a second spec installs it and one more
    second = bk_client.submit({"name": f"{unique}-b", "baseImage": stack.debian_base, "pullSecret": "private",
                               "packages": {"apt": ["bc", "dc"]}}, force=True)
    assert bk_client.wait(second.id, timeout_s=WAIT_S).phase is BuildPhase.SUCCEEDED
    # Then apt fetched less than it installed ("Need to get <to fetch>/<all> of archives"), and not the shared one
    lines = build_lines(bk_client, second.id)
    (need,) = [line for line in lines if "Need to get " in line]
    fetched, total = (parse_size(part) for part in need.split("Need to get ")[1].split(" of archives")[0].split("/"))
    assert fetched < total, need
    assert not [line for line in lines if "Get:" in line and " bc " in line]


def parse_size(text: str) -> float:
    number, unit = text.strip().split()
    return float(number.replace(",", "")) * {"B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9}[unit]


@pytest.mark.parametrize("engine", ["engine1", "engine2"])
def test_a_build_past_its_timeout_is_stopped_with_its_client_on_either_engine(stack, second_engine, unique, engine):
    # Given a BuildKit worker on either engine whose builds may take 4 s, and a build that takes longer
    host = {"engine1": None, "engine2": second_engine.host}[engine]
    before = engine_containers(host)
    with worker_on(stack, f"{engine}-short", unique, IMAGEBUILDER_BUILD_TIMEOUT_S="4",
                   **({"DOCKER_HOST": host} if host else {})) as client:
        build_id = client.submit(slow_spec(stack, unique, heavy=True), force=True).id
        # When it runs past its time
        result = client.wait(build_id, timeout_s=WAIT_S)
    # Then it failed saying so, and neither its client, nor its apt-get, nor a container of it is left on that engine
    assert result.phase is BuildPhase.FAILED and result.error == "timed out after 4 s", result.error
    assert not cli_processes(f"{stack.push_registry.host}/team/{unique}")
    wait_for(lambda: b"build-essential" not in subprocess.run(["ps", "-eo", "args"], capture_output=True).stdout,
             "the build's apt-get to stop", 30)
    assert engine_containers(host) <= before


def test_cancel_on_the_other_engine_leaves_nothing_running_there(stack, second_engine, unique):
    # Given a long BuildKit build on the second engine
    with worker_on(stack, "engine2-cancel", unique, DOCKER_HOST=second_engine.host) as client:
        # When it is cancelled while apt runs
        result = cancelled_while_apt_runs(stack, client, unique)
    # Then it ended Cancelled, and neither its client, nor its apt-get, nor any container is left on that engine
    assert result.phase is BuildPhase.CANCELLED
    assert_nothing_of_it_runs(stack, unique, second_engine.host)


def cancelled_while_apt_runs(stack, client: BuildClient, unique: str):
    """A long build (a compiler toolchain from apt), cancelled once apt downloads; its result."""
    build_id = client.submit(slow_spec(stack, unique, heavy=True), force=True).id
    wait_for_line(client, build_id, lambda line: "Get:" in line)
    client.cancel(build_id)
    return client.wait(build_id, timeout_s=WAIT_S)


def assert_nothing_of_it_runs(stack, unique: str, host: str) -> None:
    """No BuildKit client for the spec's image, no apt-get of that build, no container on the engine at `host`."""
    assert not cli_processes(f"{stack.push_registry.host}/team/{unique}")
    wait_for(lambda: b"build-essential" not in subprocess.run(["ps", "-eo", "args"], capture_output=True).stdout,
             "the build's apt-get to stop", 30)
    assert engine_containers(host) == set()
