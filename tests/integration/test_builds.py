"""End to end: specs go through Redis to a real worker, dockerd builds, registries receive the images."""

from __future__ import annotations

import docker
import pytest

from tests.integration.conftest import PUSH_PASSWORD, PUSH_USER, Stack
from worker.dockerfile import BASE_DIGEST_LABEL, TAG_LABEL
from worker.spec import parse_spec
from worker.states import BuildPhase
from worker.tagging import compute_tag

pytestmark = pytest.mark.integration
WAIT_S = 900


def pull_back(stack: Stack, image: str) -> docker.models.images.Image:
    """Remove the local copy and pull the image from the push registry, as a user of it would."""
    engine = docker.from_env()
    try:
        engine.images.remove(image, force=True)
    except docker.errors.ImageNotFound:
        pass
    auth = {"username": PUSH_USER, "password": PUSH_PASSWORD, "serveraddress": stack.push_registry.host}
    repository, tag = image.rsplit(":", 1)
    return engine.images.pull(repository, tag=tag, auth_config=auth)


def run_in(image: str, command: str) -> str:
    return docker.from_env().containers.run(image, ["sh", "-c", command], remove=True).decode()


def test_apt_package_with_pull_secret_is_built_pushed_and_installed(stack, client, unique):
    # Given a spec whose base needs the `private` pull secret and which installs jq with apt
    spec = parse_spec({"name": unique, "baseImage": stack.debian_base, "pullSecret": "private",
                       "packages": {"apt": ["jq"]}})
    # When it is submitted and built
    submitted = client.submit(spec)
    result = client.wait(submitted.id, timeout_s=WAIT_S)
    # Then it succeeded at <prefix>/<name>:<PrimeHub tag>, and the image pulled back has jq in it
    assert result.phase is BuildPhase.SUCCEEDED, result.error
    assert result.image == f"{stack.push_registry.host}/team/{unique}:{compute_tag(spec)}"
    assert result.digest.startswith("sha256:") and result.base_digest.startswith("sha256:")
    image = pull_back(stack, result.image)
    assert image.labels[TAG_LABEL] == compute_tag(spec)
    assert image.labels[BASE_DIGEST_LABEL] == result.base_digest
    assert run_in(result.image, "jq --version").startswith("jq-")
    assert any("==> pushing" in line for line in client.logs(submitted.id))
