"""The registry adapter against the real distribution registry: HEAD-only checks and its failures."""

from __future__ import annotations

import pytest

from devstack.services import free_port
from tests.integration.conftest import PULL_PASSWORD, PULL_USER
from worker.credentials import RegistryCredentials
from worker.errors import AuthFailed, RegistryUnavailable
from worker.reference import parse_reference
from worker.registry import RegistryClient

pytestmark = pytest.mark.integration


def client_for(stack, password=PULL_PASSWORD):
    host = stack.private_registry.host
    return RegistryClient(host, RegistryCredentials(host, PULL_USER, password))


def test_head_gives_the_digest_of_an_existing_manifest_and_none_for_a_missing_one(stack):
    client = client_for(stack)
    assert client.manifest_digest(parse_reference(stack.busybox_base)).startswith("sha256:")
    assert client.manifest_digest(parse_reference(stack.busybox_base + "-missing")) is None


def test_checks_use_head_never_get(stack):
    # Given the registry's access log before a check
    log = stack.private_registry.process.log_path
    before = log.read_text()
    # When a manifest is checked
    client_for(stack).manifest_digest(parse_reference(stack.busybox_base))
    # Then its manifest was requested with HEAD only (a GET counts as a pull on Docker Hub)
    new = log.read_text()[len(before):]
    assert '"HEAD /v2/base/busybox/manifests/1' in new
    assert '"GET /v2/base/busybox/manifests/' not in new


def test_wrong_password_is_an_auth_failure_naming_the_registry(stack):
    with pytest.raises(AuthFailed, match=stack.private_registry.host):
        client_for(stack, "wrong").manifest_digest(parse_reference(stack.busybox_base))


def test_a_registry_that_is_down_is_retryable():
    host = f"127.0.0.1:{free_port()}"
    with pytest.raises(RegistryUnavailable, match=host):
        RegistryClient(host).manifest_digest(parse_reference(f"{host}/x:1"))
