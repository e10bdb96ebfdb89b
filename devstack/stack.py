"""A whole local stack for tests and benchmarks: dockerd, Redis, a push and a private registry (both with
htpasswd auth), base images in the private registry, pull secrets, and `imagebuilder worker` processes."""

from __future__ import annotations

import base64
import json
import os
import secrets
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import docker
import requests

from config.settings import Settings
from devstack.baseimage import (
    BUSYBOX_IMAGE,
    DEBIAN_IMAGE,
    make_busybox,
    make_debian,
    push,
)
from devstack.services import (
    Dockerd,
    Process,
    RedisServer,
    Registry,
    free_port,
    spawn,
    wait_until,
)

PUSH_USER, PULL_USER = "pusher", "puller"
# Recognisable, random secrets: the secrecy tests search every byte we can reach for them.
PUSH_PASSWORD = f"PushPw-{secrets.token_hex(8)}"
PULL_PASSWORD = f"PullPw-{secrets.token_hex(8)}"
API_TOKEN = f"ApiToken-{secrets.token_hex(8)}"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
IMAGEBUILDER = Path(sys.executable).parent / "imagebuilder"
WORKER_READY_TIMEOUT_S = 60
BUILD_TIMEOUT_S = 600  # generous: a cold apt or pip build over the network


@dataclass
class Stack:
    """The running services and the names of the base images in the private registry."""

    workdir: Path
    redis: RedisServer
    push_registry: Registry
    private_registry: Registry
    pull_secrets_dir: Path
    debian_base: str
    busybox_base: str
    dockerd: Dockerd

    def env(self, redis_db: int = 0, **overrides: str) -> dict[str, str]:
        """The service's settings as environment variables, as an operator would set them."""
        values = {
            "PRIMEHUB_FEATURE_CUSTOM_IMAGE": "true",
            "PRIMEHUB_CUSTOM_IMAGE_REGISTRY_ENDPOINT": self.push_registry.host,
            "PRIMEHUB_CUSTOM_IMAGE_REGISTRY_USERNAME": PUSH_USER,
            "PRIMEHUB_CUSTOM_IMAGE_REGISTRY_PASSWORD": PUSH_PASSWORD,
            "PRIMEHUB_CUSTOM_IMAGE_REPO_PREFIX": f"{self.push_registry.host}/team",
            "IMAGEBUILDER_REDIS_URL": self.redis.url(redis_db),
            "IMAGEBUILDER_PULL_SECRETS_DIR": str(self.pull_secrets_dir),
            "IMAGEBUILDER_BUILD_TIMEOUT_S": str(BUILD_TIMEOUT_S),
            "IMAGEBUILDER_BUILD_CA_BUNDLE": str(CA_BUNDLE),
            "IMAGEBUILDER_API_TOKENS": f"another-token-{secrets.token_hex(8)},{API_TOKEN}",
            # The suite sends wrong tokens on purpose from this one address; its throttling has tests of its own
            # (tests/integration/test_guessing.py), which keep the default.
            "IMAGEBUILDER_AUTH_MAX_FAILURES": "100000",
            # The suite's faults and cancels are written against the classic builder's containers; BuildKit,
            # the default wherever it works, has tests of its own that unset this (tests/integration/test_buildkit.py).
            "IMAGEBUILDER_BUILDER": "classic",
        }
        values.update(overrides)
        return values

    def settings(self, redis_db: int = 0, **overrides: str) -> Settings:
        return Settings(_env_file=None, **self.env(redis_db, **overrides))

    def process_env(self, redis_db: int = 0, **overrides: str) -> dict[str, str]:
        return {**os.environ, "PYTHONUNBUFFERED": "1", **self.env(redis_db, **overrides)}


def _write_pull_secrets(root: Path, private_host: str) -> None:
    """`private` (Kubernetes layout, base64 auth), `wrong` (bad password), `elsewhere` (another host)."""
    auth = base64.b64encode(f"{PULL_USER}:{PULL_PASSWORD}".encode()).decode()
    (root / "private").mkdir(parents=True)
    kubernetes_secret = {"auths": {f"http://{private_host}": {"auth": auth}}}
    (root / "private" / ".dockerconfigjson").write_text(json.dumps(kubernetes_secret))
    (root / "wrong.json").write_text(
        json.dumps({"auths": {private_host: {"username": PULL_USER, "password": "not-the-password"}}})
    )
    (root / "elsewhere.json").write_text(json.dumps({"auths": {"registry.example.com": {"auth": auth}}}))


@contextmanager
def local_stack(workdir: Path) -> Iterator[Stack]:
    """Start everything (reusing a running dockerd), yield the Stack, stop what was started."""
    dockerd = Dockerd(workdir).start()
    services = [
        RedisServer(workdir / "redis").start(),
        Registry(workdir / "push-registry", PUSH_USER, PUSH_PASSWORD).start(),
        Registry(workdir / "private-registry", PULL_USER, PULL_PASSWORD).start(),
    ]
    try:
        yield _prepare(workdir, dockerd, *services)
    finally:
        for service in services:
            service.stop()
        dockerd.stop()


def _prepare(work: Path, dockerd: Dockerd, redis_server: RedisServer, push_registry: Registry,
             private: Registry) -> Stack:
    client = docker.from_env()
    bases = {}
    for name, local, make in (("debian:bookworm", DEBIAN_IMAGE, make_debian),
                              ("busybox:1", BUSYBOX_IMAGE, make_busybox)):
        make(client, local)
        bases[name] = f"{private.host}/base/{name}"
        client.images.get(local).tag(bases[name])
        push(client, bases[name], PULL_USER, PULL_PASSWORD)
        client.images.remove(bases[name])  # builds must pull it with the pull secret
    _write_pull_secrets(work / "pull-secrets", private.host)
    return Stack(work, redis_server, push_registry, private, work / "pull-secrets",
                 bases["debian:bookworm"], bases["busybox:1"], dockerd)


@dataclass
class WorkerProcess:
    """An `imagebuilder worker` subprocess; its output is kept for the secrecy scan."""

    process: Process

    @property
    def log_text(self) -> str:
        return self.process.log_path.read_text(errors="replace")

    def pool_children(self) -> list[int]:
        """The pids of the worker's pool processes (children of its main process)."""
        pid = self.process.popen.pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        return [int(child) for child in children]


def start_worker(stack: Stack, name: str, redis_db: int = 0, concurrency: str = "2", *,
                 wrapper: tuple[str, ...] = (), **overrides: str) -> WorkerProcess:
    """`imagebuilder worker` with the stack's settings and `overrides`, run through `wrapper` (a command that
    execs its arguments) if given; once it is ready."""
    log = stack.workdir / f"worker-{name}.log"
    process = spawn(
        [*wrapper, str(IMAGEBUILDER), "worker", "--concurrency", concurrency, "--hostname", f"{name}@%h"],
        log, env=stack.process_env(redis_db, **overrides),
    )
    worker = WorkerProcess(process)
    wait_until(lambda: " ready." in worker.log_text or process.popen.poll() is not None, f"worker {name}",
               WORKER_READY_TIMEOUT_S)
    if process.popen.poll() is not None:
        raise RuntimeError(f"worker {name} exited:\n{worker.log_text}")
    return worker


def start_api(stack: Stack, name: str, redis_db: int = 0, *, args: tuple[str, ...] = (),
              **overrides: str) -> tuple[Process, str]:
    """`imagebuilder api [args]` on a free loopback port; the process and its base URL."""
    port = free_port()
    process = spawn([str(IMAGEBUILDER), "api", "--port", str(port), *args], stack.workdir / f"api-{name}.log",
                    env=stack.process_env(redis_db, **overrides))
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: requests.get(f"{url}/readyz", timeout=2).status_code in (200, 503)
               or process.popen.poll() is not None, f"api {name}")
    if process.popen.poll() is not None:
        raise RuntimeError(f"api {name} exited:\n{process.log_path.read_text()}")
    return process, url


def start_beat(stack: Stack, name: str, redis_db: int = 0, **overrides: str) -> WorkerProcess:
    """`imagebuilder beat`; its log shows when it holds the lock and sends the scheduling pass."""
    process = spawn([str(IMAGEBUILDER), "beat"], stack.workdir / f"beat-{name}.log",
                    env=stack.process_env(redis_db, **overrides))
    beat = WorkerProcess(process)
    wait_until(lambda: "beat: Starting" in beat.log_text or process.popen.poll() is not None, f"beat {name}")
    if process.popen.poll() is not None:
        raise RuntimeError(f"beat {name} exited:\n{beat.log_text}")
    return beat
