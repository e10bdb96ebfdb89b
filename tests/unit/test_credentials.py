"""The pull-secret store reads Kubernetes-mounted and plain Docker config JSON; passwords stay masked."""

import base64
import json

import pytest

from config.settings import Settings
from core.errors import PullSecretError
from core.registry.credentials import (
    PullSecretStore,
    RegistryCredentials,
    push_credentials,
)


def b64(text):
    return base64.b64encode(text.encode()).decode()


@pytest.fixture
def store(tmp_path):
    (tmp_path / "k8s").mkdir()
    (tmp_path / "k8s" / ".dockerconfigjson").write_text(
        json.dumps({"auths": {"https://index.docker.io/v1/": {"auth": b64("hubuser:hub:pw")}}}))
    (tmp_path / "plain.json").write_text(
        json.dumps({"auths": {"http://127.0.0.1:5002": {"username": "u", "password": "p"}}}))
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "noauth.json").write_text(json.dumps({"auths": {"quay.io": {"email": "x"}}}))
    (tmp_path / "latin.json").write_bytes(b'{"auths": {"\xff": {}}}')
    (tmp_path / "listed.json").write_text(json.dumps(["auths"]))
    (tmp_path / "unreadable.json").symlink_to("/proc/self/mem")  # a file even root cannot read: EIO at offset 0
    return PullSecretStore(tmp_path)


def test_kubernetes_layout_with_base64_auth_matches_docker_hub_aliases(store):
    creds = store.credentials("k8s", "docker.io")
    assert (creds.username, creds.password) == ("hubuser", "hub:pw")


def test_plain_file_with_username_and_password_matches_by_host(store):
    assert store.credentials("plain", "127.0.0.1:5002").username == "u"


@pytest.mark.parametrize(
    ("name", "registry", "words"),
    [("missing", "quay.io", "pull secret 'missing' (for registry 'quay.io') not found: the worker has neither "
                            "missing/.dockerconfigjson nor missing.json in its IMAGEBUILDER_PULL_SECRETS_DIR"),
     ("plain", "quay.io", "has no entry for registry 'quay.io'"),
     ("broken", "quay.io", "pull secret 'broken' (for registry 'quay.io') is unreadable on the worker: "
                           "not Docker config JSON (JSONDecodeError)"),
     ("latin", "quay.io", "is unreadable on the worker: not Docker config JSON (UnicodeDecodeError)"),
     ("unreadable", "quay.io", "pull secret 'unreadable' (for registry 'quay.io') is unreadable on the worker: "
                               "Input/output error"),
     ("listed", "quay.io", "pull secret 'listed' (for registry 'quay.io') has no 'auths' object"),
     ("noauth", "quay.io", "needs 'auth'")],
)
def test_problems_name_the_secret_and_the_registry_and_no_path_on_the_worker(store, tmp_path, name, registry, words):
    # Given a store of secrets, some of them missing, malformed or unreadable
    # When a secret's entry for a registry is asked for
    with pytest.raises(PullSecretError) as problem:
        store.credentials(name, registry)
    # Then the message says what is wrong with which secret for which registry, and not where the worker keeps it
    assert words in str(problem.value)
    assert str(tmp_path) not in str(problem.value)


def test_repr_and_str_mask_the_password():
    creds = RegistryCredentials("docker.io", "me", "s3cr3t-value")
    assert "s3cr3t-value" not in repr(creds) and "s3cr3t-value" not in str(creds)
    assert creds.auth_config()["serveraddress"] == "https://index.docker.io/v1/"


def test_push_credentials_come_from_settings_or_are_anonymous():
    configured = Settings(_env_file=None, PRIMEHUB_CUSTOM_IMAGE_REGISTRY_ENDPOINT="docker.io",
                          PRIMEHUB_CUSTOM_IMAGE_REGISTRY_USERNAME="me", PRIMEHUB_CUSTOM_IMAGE_REGISTRY_PASSWORD="pw")
    assert push_credentials(configured) == RegistryCredentials("docker.io", "me", "pw")
    assert push_credentials(Settings(_env_file=None)) is None
