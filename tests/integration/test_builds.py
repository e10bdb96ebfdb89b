"""End to end: specs go through Redis to a real worker, dockerd builds, registries receive the images."""

from __future__ import annotations

import docker
import pytest

from core.phases import BuildPhase
from core.spec import parse_spec
from core.tagging import compute_tag
from tests.integration.conftest import PUSH_PASSWORD, PUSH_USER, Stack
from tests.integration.helpers import all_containers
from worker.dockerfile import BASE_DIGEST_LABEL, TAG_LABEL

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
    containers_before = all_containers()
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
    assert all_containers() <= containers_before  # no build container left after success


def test_pip_package_installs_on_an_externally_managed_debian_python(stack, client, unique):
    # Given Debian's python3 (PEP 668: pip refuses system installs by default) and the CA bundle setting
    spec = parse_spec({"name": unique, "baseImage": stack.debian_base, "pullSecret": "private",
                       "packages": {"pip": ["six==1.17.0"]}})
    # When it is built
    result = client.wait(client.submit(spec).id, timeout_s=WAIT_S)
    # Then the package is importable in the pushed image
    assert result.phase is BuildPhase.SUCCEEDED, result.error
    pull_back(stack, result.image)
    assert run_in(result.image, "python3 -c 'import six; print(six.__version__)'").strip() == "1.17.0"


def test_unchanged_resubmission_is_skipped_and_force_rebuilds(stack, client, unique):
    # Given a spec that has been built once
    spec = parse_spec({"name": unique, "baseImage": stack.busybox_base, "pullSecret": "private"})
    first = client.wait(client.submit(spec).id, timeout_s=WAIT_S)
    assert first.phase is BuildPhase.SUCCEEDED and not first.skipped, first.error
    # When the same spec is submitted again
    again = client.submit(spec)
    second = client.wait(again.id, timeout_s=WAIT_S)
    # Then it succeeds as skipped, with the existing digest, and nothing was pulled or built
    assert second.phase is BuildPhase.SUCCEEDED and second.skipped
    assert second.digest == first.digest and second.image == first.image
    assert not any(line.startswith("==> ") for line in client.logs(again.id))
    # When it is forced
    forced = client.submit(spec, force=True)
    third = client.wait(forced.id, timeout_s=WAIT_S)
    # Then it is built and pushed again (a new creation time gives a new digest)
    assert third.phase is BuildPhase.SUCCEEDED and not third.skipped, third.error
    assert third.digest != first.digest
    assert "==> building" in list(client.logs(forced.id))


@pytest.mark.parametrize(
    ("secret", "expected"),
    [
        ("absent", "pull secret 'absent' (for registry"),
        ("elsewhere", "has no entry for registry"),
        ("wrong", "rejected the credentials"),
    ],
)
def test_bad_pull_secret_fails_clearly_and_pushes_nothing(stack, client, unique, secret, expected):
    # Given a spec naming a pull secret that is missing, for another host, or with a wrong password
    spec = parse_spec({"name": unique, "baseImage": stack.busybox_base, "pullSecret": secret})
    # When it is built
    result = client.wait(client.submit(spec).id, timeout_s=WAIT_S)
    # Then it fails with a message naming the problem and the registry, and the target does not exist
    assert result.phase is BuildPhase.FAILED
    assert expected in result.error
    assert stack.private_registry.host in result.error
    assert target_digest(stack, result.image) is None


def target_digest(stack: Stack, image: str) -> str | None:
    from core.reference import parse_reference
    from core.registry.client import RegistryClient
    from core.registry.credentials import RegistryCredentials

    reference = parse_reference(image)
    credentials = RegistryCredentials(reference.registry, PUSH_USER, PUSH_PASSWORD)
    return RegistryClient(reference.registry, credentials).manifest_digest(reference)


def test_an_apt_version_glob_installs_the_version_apt_matches(stack, client, unique):
    # Given an apt item with a version glob, as real Dockerfiles write them (`mesos=1.2*`)
    spec = parse_spec({"name": unique, "baseImage": stack.debian_base, "pullSecret": "private",
                       "packages": {"apt": ["jq=1.6*"]}})
    # When it is built
    result = client.wait(client.submit(spec).id, timeout_s=WAIT_S)
    # Then apt picked the matching version
    assert result.phase is BuildPhase.SUCCEEDED, result.error
    pull_back(stack, result.image)
    assert run_in(result.image, "jq --version").startswith("jq-1.6")
