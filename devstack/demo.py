"""The demo: start whatever is not running (dockerd, Redis, a local registry, a worker, the API and its console),
then build and push examples/demo.yaml to the local registry with the real CLI. `python -m devstack.demo down`
stops what it started."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import docker
import redis
import requests
import yaml

from core.errors import ImageBuilderError
from core.reference import parse_reference
from core.registry.client import RegistryClient
from devstack.baseimage import DEBIAN_IMAGE, make_debian, push
from devstack.services import Dockerd, Process, RedisServer, Registry, spawn, wait_until

ROOT = Path(__file__).resolve().parents[1]
STATE = ROOT / ".devstack"
SPEC = ROOT / "examples" / "demo.yaml"
REDIS_PORT, REGISTRY_PORT = 6379, 5000
REGISTRY = f"127.0.0.1:{REGISTRY_PORT}"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
IMAGEBUILDER = Path(sys.executable).parent / "imagebuilder"
HUB_CHECK_TIMEOUT_S = 5
API_PORT = int(os.environ.get("IMAGEBUILDER_DEMO_API_PORT", "8000"))
API_URL = f"http://127.0.0.1:{API_PORT}"
TOKEN_FILE = STATE / "api-token"  # readable by root only; the demo never prints the token


def demo_env() -> dict[str, str]:
    """The local default: no Docker Hub account, an anonymous registry on loopback."""
    env = {
        "PRIMEHUB_FEATURE_CUSTOM_IMAGE": "true",
        "PRIMEHUB_CUSTOM_IMAGE_REGISTRY_ENDPOINT": REGISTRY,
        "PRIMEHUB_CUSTOM_IMAGE_REPO_PREFIX": f"{REGISTRY}/demo",
        "IMAGEBUILDER_REDIS_URL": f"redis://127.0.0.1:{REDIS_PORT}/0",
        "IMAGEBUILDER_PULL_SECRETS_DIR": str(STATE / "pull-secrets"),
    }
    if CA_BUNDLE.is_file():
        env["IMAGEBUILDER_BUILD_CA_BUNDLE"] = str(CA_BUNDLE)
    return {**os.environ, **env}


def remember(name: str, process: Process | None) -> None:
    if process:
        (STATE / f"{name}.pid").write_text(str(process.popen.pid))
        print(f"demo: started {name} (pid {process.popen.pid}, log {process.log_path})")


def ensure_services() -> None:
    remember("dockerd", Dockerd(STATE).start().process)
    if not _answers(lambda: redis.Redis(port=REDIS_PORT).ping()):
        remember("redis", RedisServer(STATE / "redis", port=REDIS_PORT).start().process)
    if not _answers(lambda: requests.get(f"http://{REGISTRY}/v2/", timeout=2).ok):
        remember("registry", Registry(STATE / "registry", port=REGISTRY_PORT).start().process)
    if not _running("worker"):
        log = STATE / "worker.log"
        process = spawn([str(IMAGEBUILDER), "worker", "--hostname", "demo@%h"], log, env=demo_env())
        wait_until(lambda: " ready." in log.read_text(errors="replace"), "the demo worker")
        remember("worker", process)
    if not _running("api") and not _answers(lambda: requests.get(f"{API_URL}/readyz", timeout=2).ok):
        process = spawn([str(IMAGEBUILDER), "api", "--host", "127.0.0.1", "--port", str(API_PORT)],
                        STATE / "api.log", env={**demo_env(), "IMAGEBUILDER_API_TOKENS": _api_token()})
        wait_until(lambda: _answers(lambda: requests.get(f"{API_URL}/readyz", timeout=2).ok), "the demo API")
        remember("api", process)


def _api_token() -> str:
    if not TOKEN_FILE.exists():
        TOKEN_FILE.touch(mode=0o600)
        TOKEN_FILE.write_text(secrets.token_urlsafe(32))
    return TOKEN_FILE.read_text().strip()


def _answers(check) -> bool:
    try:
        return bool(check())
    except Exception:
        return False


def _running(name: str) -> bool:
    pid_file = STATE / f"{name}.pid"
    return pid_file.exists() and Path(f"/proc/{pid_file.read_text().strip()}").exists()


def demo_spec() -> Path:
    """examples/demo.yaml as it is when Docker Hub answers; else with a locally made base in the local registry."""
    spec = yaml.safe_load(SPEC.read_text())
    base = parse_reference(spec["baseImage"])
    try:
        RegistryClient(base.registry, timeout_s=HUB_CHECK_TIMEOUT_S).manifest_digest(base)
        return SPEC
    except ImageBuilderError:
        print(f"demo: {base.registry} is unreachable; making {base.repository}:{base.tag} locally with debootstrap")
    local = f"{REGISTRY}/{base.repository}:{base.tag}"
    engine = docker.from_env()
    make_debian(engine, DEBIAN_IMAGE)
    engine.images.get(DEBIAN_IMAGE).tag(local)
    push(engine, local, None, None)
    spec["baseImage"] = local
    offline = STATE / "demo.yaml"
    offline.write_text(yaml.safe_dump(spec))
    return offline


def up() -> int:
    STATE.mkdir(exist_ok=True)
    (STATE / "pull-secrets").mkdir(exist_ok=True)
    ensure_services()
    spec = demo_spec()
    print(f"demo: imagebuilder submit {spec} --wait", flush=True)
    code = subprocess.run([str(IMAGEBUILDER), "submit", str(spec), "--wait"], env=demo_env()).returncode
    print(f"demo: the console is at {API_URL}/ui/ (sign in with the token in {TOKEN_FILE})")
    return code


def down() -> int:
    for pid_file in STATE.glob("*.pid"):
        try:
            os.kill(int(pid_file.read_text()), signal.SIGTERM)
            print(f"demo: stopped {pid_file.stem}")
        except (ProcessLookupError, ValueError):
            pass
        pid_file.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(down() if sys.argv[1:] == ["down"] else up())
