"""A worker on a remote Docker engine over TLS, as on Kubernetes with a Docker-in-Docker sidecar: the standard
DOCKER_HOST=tcp://…, DOCKER_TLS_VERIFY and DOCKER_CERT_PATH, no Docker socket of its own, and the system CA bundle
in REQUESTS_CA_BUNDLE and CURL_CA_BUNDLE (which must not replace the engine's private CA). The engine is the second
dockerd serving TLS on loopback, with certificates made by openssl (tests/integration/tls_certs.py)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import docker
import pytest

from core.phases import BuildPhase
from producer.client import BuildClient
from tests.integration.conftest import start_worker
from tests.integration.test_buildkit import (
    assert_nothing_of_it_runs,
    cancelled_while_apt_runs,
)
from tests.integration.test_builds import WAIT_S, pull_back, run_in

pytestmark = pytest.mark.integration
REMOTE_DB = 21
SYSTEM_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
# A mount namespace of the worker's own with an empty /run: /var/run/docker.sock (and every other socket there) is
# not there for it.
WITHOUT_RUN = ("unshare", "--mount", "--propagation", "private", "sh", "-c", 'mount -t tmpfs none /run && exec "$@"',
               "sh")


def tls_env(engine, cert_path: Path, builder: str) -> dict[str, str]:
    return {"DOCKER_HOST": engine.tls_host, "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(cert_path),
            "REQUESTS_CA_BUNDLE": SYSTEM_BUNDLE, "CURL_CA_BUNDLE": SYSTEM_BUNDLE, "IMAGEBUILDER_BUILDER": builder}


@contextlib.contextmanager
def remote_worker(stack, engine, cert_path: Path, name: str, builder: str):
    worker = start_worker(stack, name, REMOTE_DB, wrapper=WITHOUT_RUN, **tls_env(engine, cert_path, builder))
    try:
        with BuildClient(stack.settings(REMOTE_DB)) as client:
            yield worker, client
    finally:
        worker.process.stop()


@pytest.mark.parametrize("builder", ["classic", "buildkit"])
def test_a_worker_without_a_docker_socket_builds_and_pushes_through_a_tls_engine(
        stack, second_engine, engine_tls, unique, builder):
    # Given a worker with no Docker socket, told of the TLS engine only by the standard variables
    with remote_worker(stack, second_engine, engine_tls.client, f"tls-{builder}-{unique}", builder) as (worker, client):
        assert not Path(f"/proc/{worker.process.popen.pid}/root/run/docker.sock").exists()
        # When it builds a spec with an apt package
        spec = {"name": unique, "baseImage": stack.debian_base, "pullSecret": "private",
                "packages": {"apt": ["jq"]}}
        result = client.wait(client.submit(spec, force=True).id, timeout_s=WAIT_S)
        log = worker.log_text
    # Then it built with the builder asked for, on that engine, and pushed an image that works
    assert result.phase is BuildPhase.SUCCEEDED, result.error
    expected = "builder: BuildKit through" if builder == "buildkit" else "builder: classic"
    assert expected in log, log
    assert docker.DockerClient(base_url=second_engine.host).images.get(result.image)
    pull_back(stack, result.image)
    assert run_in(result.image, "jq --version").startswith("jq-")


@pytest.mark.parametrize("builder", ["classic", "buildkit"])
def test_cancel_through_a_tls_engine_stops_the_build_there(stack, second_engine, engine_tls, unique, builder):
    # Given a long build by a socketless worker on the TLS engine
    with remote_worker(stack, second_engine, engine_tls.client, f"tls-cancel-{builder}-{unique}", builder) as (
            _, client):
        # When it is cancelled while apt runs
        result = cancelled_while_apt_runs(stack, client, unique)
    # Then it ended Cancelled, and nothing of it runs on that engine: no container, no client, no apt-get
    assert result.phase is BuildPhase.CANCELLED
    assert_nothing_of_it_runs(stack, unique, second_engine.host)


@pytest.mark.parametrize(("certificates", "says"), [
    ("wrong_ca", "certificate verify failed"),
    ("untrusted_client", "alert bad certificate"),
    ("missing", "missing: ca.pem, cert.pem, key.pem"),
])
def test_a_wrong_or_missing_certificate_stops_the_worker_at_start_saying_why(
        stack, second_engine, engine_tls, tmp_path, unique, certificates, says):
    # Given certificates the engine and the worker cannot agree on, or none at all
    cert_path = tmp_path if certificates == "missing" else getattr(engine_tls, certificates)
    # When a worker starts with them
    with pytest.raises(RuntimeError, match="exited") as exited:
        start_worker(stack, f"tls-{certificates}-{unique}", REMOTE_DB, wrapper=WITHOUT_RUN,
                     **tls_env(second_engine, cert_path, "classic"))
    # Then it stopped before taking any build, naming the engine, the setting and the reason, without a traceback
    message = str(exited.value)
    assert says in message and second_engine.tls_host in message and "DOCKER_CERT_PATH" in message, message
    assert "Traceback" not in message and " ready." not in message
