"""Docker references: the distribution grammar and Docker Hub's normalisation."""

import pytest

from core.reference import (
    is_loopback,
    normalise_registry,
    parse_reference,
    plain_http_allowed,
)


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "api_host"),
    [
        ("ubuntu", "docker.io", "library/ubuntu", None, "registry-1.docker.io"),
        ("jupyter/base-notebook:2024", "docker.io", "jupyter/base-notebook", "2024", "registry-1.docker.io"),
        ("index.docker.io/library/debian:12", "docker.io", "library/debian", "12", "registry-1.docker.io"),
        ("registry.gitlab.com/infuseai/docker-stacks/scipy-notebook", "registry.gitlab.com",
         "infuseai/docker-stacks/scipy-notebook", None, "registry.gitlab.com"),
        ("localhost:5000/base/deb:1", "localhost:5000", "base/deb", "1", "localhost:5000"),
        ("localhost/x", "localhost", "x", None, "localhost"),
        ("127.0.0.1:5002/a__b/c-d.e:v1.0_x", "127.0.0.1:5002", "a__b/c-d.e", "v1.0_x", "127.0.0.1:5002"),
    ],
)
def test_parse_and_normalise(text, registry, repository, tag, api_host):
    ref = parse_reference(text)
    assert (ref.registry, ref.repository, ref.tag, ref.api_host) == (registry, repository, tag, api_host)


def test_digest_is_preferred_for_manifest_lookups():
    digest = "sha256:" + "ab" * 32
    ref = parse_reference(f"quay.io/org/img:1.0@{digest}")
    assert ref.digest == digest and ref.manifest_reference == digest
    assert str(ref) == f"quay.io/org/img:1.0@{digest}"
    assert parse_reference("quay.io/org/img").manifest_reference == "latest"


@pytest.mark.parametrize("text", ["", "Ubuntu", "ubuntu:", "ubuntu:-x", "a//b", "a/b/", "ubuntu:tä", "ubuntu\n",
                                  "ubuntu@sha256:abc", "x:" + "a" * 129, "$(id)", "a b"])
def test_invalid_references(text):
    with pytest.raises(ValueError, match="not a Docker image reference"):
        parse_reference(text)


@pytest.mark.parametrize("server", ["https://index.docker.io/v1/", "docker.io", "registry-1.docker.io",
                                    "index.docker.io", "registry.hub.docker.com"])
def test_docker_hub_aliases(server):
    assert normalise_registry(server) == "docker.io"


def test_urls_become_host_and_port():
    assert normalise_registry("http://127.0.0.1:5002/v2/") == "127.0.0.1:5002"


@pytest.mark.parametrize(("registry", "loopback"), [("localhost:5000", True), ("127.0.0.1:5002", True),
                                                    ("[::1]:5000", True), ("registry.example.com", False),
                                                    ("10.0.0.1:5000", False)])
def test_loopback_registries_are_insecure_by_default(registry, loopback):
    assert is_loopback(registry) is loopback


@pytest.mark.parametrize(("registry", "loopback"), [
    ("127.0.0.1:5000", True), ("127.1.2.3", True), ("localhost:5000", True), ("LOCALHOST", True),
    ("[::1]:5000", True), ("::1", True),
    ("127.evil.example", False), ("127.evil.example:80", False), ("localhost.evil.example", False),
    ("10.0.0.1:5000", False), ("registry.local:5000", False), ("[fe80::1]:5000", False),
])
def test_loopback_means_a_loopback_address_or_localhost_not_a_name_that_looks_like_one(registry, loopback):
    assert is_loopback(registry) is loopback


def test_plain_http_is_for_loopback_and_listed_hosts_only():
    listed = frozenset({"registry.local:5000", "mirror.lan"})
    assert plain_http_allowed("127.0.0.1:5000", frozenset())
    assert plain_http_allowed("registry.local:5000", listed) and plain_http_allowed("mirror.lan:8080", listed)
    assert not plain_http_allowed("registry.local:5001", frozenset({"registry.local:5000"}))
    assert not plain_http_allowed("127.evil.example", listed)
