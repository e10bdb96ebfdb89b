"""Token realms a registry names: credentials go only to http(s) realms, plain http only where registries may
use it, and never to a link-local or cloud metadata address (literal addresses here: no lookup is needed)."""

import pytest

from core.errors import UnsafeTokenRealm
from core.registry.client import RegistryClient
from core.registry.credentials import RegistryCredentials


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


def test_proxies_come_from_the_environment_once_per_host_and_honour_no_proxy(monkeypatch):
    # Given a proxy for https and a NO_PROXY naming one registry
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "direct.example")
    registry = client()
    # When the proxies for two hosts are worked out, then the environment changes
    proxied = registry._proxies_for("https://registry.example.com/v2/x/manifests/1")
    direct = registry._proxies_for("https://direct.example/token")
    monkeypatch.setenv("HTTPS_PROXY", "http://other.example:3128")
    # Then the first goes through the proxy, the second does not, and each host's answer is kept
    assert proxied.get("https") == "http://proxy.example:3128"
    assert "https" not in direct
    assert registry._proxies_for("https://registry.example.com/v2/y/manifests/2") == proxied
