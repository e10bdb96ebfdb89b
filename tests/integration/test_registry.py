"""The registry adapter against the real distribution registry: HEAD-only checks and its failures."""

from __future__ import annotations

import time

import pytest

from core.errors import AuthFailed, RegistryUnavailable, UnreadableImage
from core.reference import parse_reference
from core.registry.client import RegistryClient
from core.registry.credentials import RegistryCredentials
from devstack.services import free_port
from tests.integration.conftest import PULL_PASSWORD, PULL_USER
from tests.integration.hostile_registry import (
    EXPIRING_TOKENS,
    HUGE_MANIFEST,
    IMAGE_LABELS,
    TOKEN_DIGEST,
    TOKEN_LIFE_S,
)

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


def test_a_kept_client_sends_the_accepted_credentials_up_front_and_asks_again_once_refused(stack):
    # Given a client that has checked one manifest (a 401 Basic challenge, then the answer)
    log = stack.private_registry.process.log_path
    client = client_for(stack)
    client.manifest_digest(parse_reference(stack.busybox_base))
    before = len(log.read_text())
    # When it checks three more, of two repositories
    for base in (stack.busybox_base, stack.debian_base, stack.busybox_base):
        assert client.manifest_digest(parse_reference(base)).startswith("sha256:")
    # Then each took one HEAD, none of them refused: the credentials went with the first request
    heads = [line for line in log.read_text()[before:].splitlines() if '"HEAD /v2/' in line]
    assert len(heads) == 3 and not [line for line in heads if '" 401 ' in line], heads


def test_bearer_tokens_are_reused_until_they_expire_then_renewed(hostile):
    # Given a registry whose token service issues tokens that last 2 seconds
    client = RegistryClient(hostile.host)
    reference = parse_reference(hostile.base(EXPIRING_TOKENS))
    # When a manifest is checked three times at once, then again once the token has expired
    digests = [client.manifest_digest(reference) for _ in range(3)]
    first = list(hostile.requests)
    time.sleep(TOKEN_LIFE_S + 0.5)
    client.manifest_digest(reference)
    # Then one token served the first three HEADs, and a new one was fetched only after it expired
    assert digests == [TOKEN_DIGEST] * 3
    assert [r.split("?")[0] for r in first] == ["HEAD /v2/tokens/base/manifests/1", "GET /token/tokens",
                                                 "HEAD /v2/tokens/base/manifests/1", "HEAD /v2/tokens/base/manifests/1",
                                                 "HEAD /v2/tokens/base/manifests/1"]
    assert [r.split("?")[0] for r in hostile.requests[len(first):]].count("GET /token/tokens") == 1


def test_an_images_labels_are_read_from_its_config_through_a_redirect_to_a_safe_address_only(hostile):
    client = RegistryClient(hostile.host)
    # Given a registry that sends config blob GETs to its storage, here on loopback
    # Then the labels are read through that redirect
    assert client.image_labels(parse_reference(hostile.base("labels-storage"))) == IMAGE_LABELS
    # And a redirect to the cloud metadata address is refused, saying so, without a request going there
    with pytest.raises(UnreadableImage, match="refused, it is a link-local or cloud metadata address"):
        client.image_labels(parse_reference(hostile.base("labels-metadata")))
    # And a manifest past the registry's own bound is not read to its end
    with pytest.raises(RegistryUnavailable, match="sent more than 4194304 bytes"):
        client.image_labels(parse_reference(hostile.base(HUGE_MANIFEST)))
