"""Token realms a registry names: credentials go only to http(s) realms, plain http only where registries may
use it, and never to a link-local or cloud metadata address (literal addresses here: no lookup is needed)."""

import pytest

from worker.credentials import RegistryCredentials
from worker.errors import UnsafeTokenRealm
from worker.registry import RegistryClient


def client(registry="registry.example.com", insecure=frozenset()):
    return RegistryClient(registry, RegistryCredentials(registry, "u", "secret"), insecure_registries=insecure)


@pytest.mark.parametrize(("realm", "words"), [
    ("http://169.254.169.254/latest/meta-data/iam", "link-local or cloud metadata"),
    ("https://169.254.170.2/v2/credentials", "link-local or cloud metadata"),
    ("https://[fe80::1]/token", "link-local or cloud metadata"),
    ("https://[fd00:ec2::254]/token", "link-local or cloud metadata"),
    ("https://[::ffff:169.254.169.254]/token", "link-local or cloud metadata"),
    ("file:///etc/passwd", "an http(s) URL"),
    ("gopher://10.0.0.1/", "an http(s) URL"),
    ("https://user:pw@10.0.0.1/token", "without credentials in it"),
    ("http://10.0.0.1/token", "plain http is for loopback and IMAGEBUILDER_INSECURE_REGISTRIES only"),
    ("http://127.evil.example/token", "plain http is for loopback"),
])
def test_unsafe_realms_are_refused_before_any_request(realm, words):
    with pytest.raises(UnsafeTokenRealm, match="refused") as refused:
        client()._safe_realm(realm, "manifest check of x")
    assert words in str(refused.value) and "secret" not in str(refused.value)


@pytest.mark.parametrize(("realm", "insecure"), [
    ("https://10.0.0.1/token", frozenset()), ("http://127.0.0.1:5001/token", frozenset()),
    ("http://[::1]:5001/token", frozenset()), ("http://10.0.0.1:8080/token", frozenset({"10.0.0.1"})),
])
def test_safe_realms_are_kept(realm, insecure):
    assert client(insecure=insecure)._safe_realm(realm, "manifest check of x") == realm
