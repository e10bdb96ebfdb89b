"""compose.yaml for real: Debian's docker-compose parses it, the project image builds on a locally made Python
base, and the stack comes up with two workers and builds a spec end to end through its API.

The stack's host ports are free ones, so that whatever else runs here (the demo's Redis on 6379 and registry on
5000, say) is left alone."""

from __future__ import annotations

import os
import shutil
import time

import docker
import httpx
import pytest
import redis
import yaml

from config.settings import Settings
from core.reference import parse_reference
from core.stores.connection import redis_client
from devstack.baseimage import push
from devstack.compose import (
    PYTHON_BASE,
    ROOT,
    compose,
    prepare_images,
    trust_host_ca_in_project_build,
)
from devstack.sentinel import knows_the_group
from devstack.services import free_port
from tests.integration.helpers import wait_for
from tests.integration.test_buildkit import bridge_address
from worker.dockerfile import FALLBACK_NOTICE

pytestmark = pytest.mark.integration
PROJECT = "imagebuilder-compose-test"
TOKEN = "compose-test-token-0123456789"
REDIS_PORT, REGISTRY_PORT, API_PORT, PIP_CACHE_PORT = free_port(), free_port(), free_port(), free_port()
APT_CACHE_PORT = free_port()
REGISTRY = f"localhost:{REGISTRY_PORT}"
API = f"http://127.0.0.1:{API_PORT}"


@pytest.fixture(scope="module")
def compose_env(stack):
    if not shutil.which("docker-compose"):
        pytest.fail("docker-compose is not installed: scripts/bootstrap.sh installs it")
    ports = {"IMAGEBUILDER_REDIS_PORT": str(REDIS_PORT), "IMAGEBUILDER_REGISTRY_PORT": str(REGISTRY_PORT),
             "IMAGEBUILDER_API_PORT": str(API_PORT), "PRIMEHUB_CUSTOM_IMAGE_REGISTRY_ENDPOINT": REGISTRY,
             "PRIMEHUB_CUSTOM_IMAGE_REPO_PREFIX": f"{REGISTRY}/images"}
    address = bridge_address()
    caches = {"IMAGEBUILDER_CACHE_ADDRESS": address, "IMAGEBUILDER_APT_CACHE_PORT": str(APT_CACHE_PORT),
              "IMAGEBUILDER_PIP_CACHE_PORT": str(PIP_CACHE_PORT),
              "IMAGEBUILDER_APT_PROXY": f"http://{address}:{APT_CACHE_PORT}",
              "IMAGEBUILDER_PIP_MIRROR": f"http://{address}:{PIP_CACHE_PORT}/index/"}
    return {**os.environ, "IMAGEBUILDER_API_TOKENS": TOKEN, "BASE_IMAGE": PYTHON_BASE, **ports, **caches}


def test_compose_file_parses(compose_env):
    done = compose(PROJECT, "config", env=compose_env)
    assert done.returncode == 0, done.stderr
    assert "stop_grace_period: 60s" in done.stdout and "network_mode: host" in done.stdout


def test_the_stack_comes_up_scaled_and_builds_a_spec_end_to_end(compose_env, unique):
    # Given the project image built on a local Python base, and local stand-ins for redis and registry
    engine = docker.from_env()
    prepare_images(engine)
    trust_host_ca_in_project_build()
    compose(PROJECT, "down", "-v", "--timeout", "5", env=compose_env)  # whatever an aborted run left
    built = compose(PROJECT, "build", env=compose_env)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    try:
        # When the stack starts with two workers
        up = compose(PROJECT, "up", "-d", "--scale", "worker=2", env=compose_env)
        assert up.returncode == 0, up.stderr[-3000:]
        # (each worker is seen once it has started, so the second may follow the first by a few seconds)
        wait_for(lambda: _workers_seen() == 2, "both workers in the API's /healthz", 120)
        beat = compose(PROJECT, "ps", "beat", env=compose_env).stdout
        assert "Up" in beat and "imagebuilder beat" in beat
        # And the example spec is posted, its Debian base made here and put in the stack's registry
        spec = yaml.safe_load((ROOT / "examples" / "demo.yaml").read_text())
        upstream = parse_reference(spec["baseImage"])
        base = f"{REGISTRY}/{upstream.repository}:{upstream.tag}"
        engine.images.get(PYTHON_BASE).tag(base)
        push(engine, base, None, None)
        spec.update(name=unique, baseImage=base)
        auth = {"Authorization": f"Bearer {TOKEN}"}
        # (forced: every step runs, even where this engine has the layers from another session)
        build_id = httpx.post(f"{API}/builds", json=spec, headers=auth, params={"force": "true"}).json()["id"]
        # Then it is built and pushed to the stack's registry
        wait_for(lambda: httpx.get(f"{API}/builds/{build_id}", headers=auth).json()["phase"] != "Pending"
                 and httpx.get(f"{API}/builds/{build_id}", headers=auth).json()["phase"] != "Running",
                 "the build", 600)
        result = httpx.get(f"{API}/builds/{build_id}", headers=auth).json()
        assert result["phase"] == "Succeeded", result
        assert result["image"].startswith(f"{REGISTRY}/images/{unique}:")
        assert httpx.get(f"http://{REGISTRY}/v2/images/{unique}/tags/list").json()["tags"]
        # And the workers built it with BuildKit, through the Docker client the image carries
        workers = compose(PROJECT, "logs", "--no-color", "worker", env=compose_env).stdout
        assert "builder: BuildKit through /usr/bin/docker (client 20.10" in workers, workers[-3000:]
        # And apt went through the stack's apt cache, which answered: the workers named it, none was passed by, and
        # the cache holds the lists the build's apt asked for
        assert f"package caches: apt http://{compose_env['IMAGEBUILDER_CACHE_ADDRESS']}:{APT_CACHE_PORT}" in workers
        assert "does not answer" not in workers, workers[-3000:]
        lines = httpx.get(f"{API}/builds/{build_id}/logs", headers=auth).text
        assert FALLBACK_NOTICE.format(tool="apt") not in lines and "apt_install" in lines, lines[-3000:]
        cached = compose(PROJECT, "exec", "-T", "apt-cache", "find", "/var/cache/apt-cacher-ng", "-name", "InRelease",
                         env=compose_env).stdout
        assert "deb.debian.org/debian/dists/" in cached, cached[-3000:]
    finally:
        logs = compose(PROJECT, "logs", "--no-color", env=compose_env).stdout
        compose(PROJECT, "down", "-v", "--timeout", "5", env=compose_env)
        print(logs[-5000:])


def _workers_seen() -> int:
    try:
        return httpx.get(f"{API}/healthz", timeout=2).json()["workers"]
    except (httpx.HTTPError, ValueError):
        time.sleep(1)
        return 0


SENTINEL_PORTS = [free_port() for _ in range(3)]


def test_the_sentinel_profile_fails_over_to_the_replica_and_takes_the_old_master_back(compose_env):
    # Given the sentinel profile's Redis: the master, its replica and three sentinels, quick to call a master down
    prepare_images(docker.from_env())
    env = {**compose_env, "COMPOSE_PROFILES": "sentinel", "IMAGEBUILDER_SENTINEL_DOWN_AFTER_MS": "1000",
           **{f"IMAGEBUILDER_SENTINEL_PORT_{n}": str(port) for n, port in enumerate(SENTINEL_PORTS, 1)}}
    services = ["redis", "redis-replica", "sentinel-1", "sentinel-2", "sentinel-3"]
    compose(PROJECT, "down", "-v", "--timeout", "5", env=env)
    try:
        up = compose(PROJECT, "up", "-d", *services, env=env)
        assert up.returncode == 0, up.stderr[-3000:]
        # and a client named as the worker's settings name it (the sentinels' ports published on the host)
        settings = Settings(_env_file=None, IMAGEBUILDER_REDIS_URL="redis://localhost/0",
                            IMAGEBUILDER_REDIS_SENTINELS=",".join(f"127.0.0.1:{p}" for p in SENTINEL_PORTS))
        client = redis_client(settings, patient=True)
        wait_for(lambda: _replicas(client) == 1 and all(_sees_the_group(port) for port in SENTINEL_PORTS),
                 "the replica in sync, and each sentinel knowing it and the other two", 60)
        client.set("before", "1")
        assert client.wait(1, 5000) == 1
        old = client.execute_command("ROLE")[0:1]
        # When the master's container is killed
        assert compose(PROJECT, "kill", "redis", env=env).returncode == 0
        # Then the same client writes on the promoted replica without being told, and finds what was there
        client.set("after", "1")
        assert client.get("before") == "1" and old == ["master"]
        # And the old master, started again, rejoins as a replica of the new one
        assert compose(PROJECT, "start", "redis", env=env).returncode == 0
        wait_for(lambda: _replicas(client) == 1, "the old master back as a replica", 60)
    finally:
        compose(PROJECT, "down", "-v", "--timeout", "5", env=env)


def _sees_the_group(port: int) -> bool:
    try:
        return knows_the_group(redis.Redis(port=port, socket_timeout=2), replicas=1)
    except redis.RedisError:
        return False


def _replicas(client) -> int:
    try:
        return int(client.info("replication")["connected_slaves"])
    except Exception:
        return 0
