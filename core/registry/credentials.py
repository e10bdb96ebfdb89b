"""Registry credentials: a masked value object, and the worker-local pull-secret store that yields them."""

from __future__ import annotations

import base64
import binascii
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from config.settings import Settings
from core.errors import PullSecretError
from core.reference import DOCKER_HUB, DOCKER_HUB_LOGIN_SERVER, normalise_registry

DOCKERCONFIG_FILE = ".dockerconfigjson"
SECRETS_DIR_SETTING = "IMAGEBUILDER_PULL_SECRETS_DIR"

# A PullSecretError reaches API and console users (a build's error, a schedule's last error): it names the secret
# and the registry, never a path on the worker. The worker's own log says where it looked.
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RegistryCredentials:
    """A username and password for one registry; the password never shows in repr or str."""

    registry: str
    username: str
    password: str = field(repr=False)

    def __repr__(self) -> str:
        return f"RegistryCredentials(registry={self.registry!r}, username={self.username!r}, password='***')"

    __str__ = __repr__

    def auth_config(self) -> dict[str, str]:
        """The `auth_config` the Docker SDK sends (base64 in a header, never logged by us)."""
        server = DOCKER_HUB_LOGIN_SERVER if self.registry == DOCKER_HUB else self.registry
        return {"username": self.username, "password": self.password, "serveraddress": server}


class PullSecretStore:
    """Named Docker config JSON files under one folder, as Kubernetes mounts dockerconfigjson secrets."""

    def __init__(self, root: Path):
        self._root = root

    def credentials(self, secret_name: str, registry: str) -> RegistryCredentials:
        """The entry of `secret_name` for `registry`; PullSecretError naming both when there is none."""
        auths = self._load(secret_name, registry)
        for server, entry in auths.items():
            if normalise_registry(server) == registry:
                return _entry_credentials(secret_name, registry, entry)
        raise PullSecretError(
            f"pull secret {secret_name!r} has no entry for registry {registry!r} "
            f"(it has: {', '.join(sorted(normalise_registry(s) for s in auths)) or 'none'})"
        )

    def _load(self, secret_name: str, registry: str) -> dict[str, dict]:
        path = self._path(secret_name, registry)
        try:
            document = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            logger.warning("pull secret %r: cannot read %s: %s", secret_name, path, _why_unreadable(e))
            raise PullSecretError(f"pull secret {secret_name!r} (for registry {registry!r}) is unreadable on the "
                                  f"worker: {_why_unreadable(e)}") from None
        auths = document.get("auths") if isinstance(document, dict) else None
        if not isinstance(auths, dict):
            logger.warning("pull secret %r: %s has no 'auths' object", secret_name, path)
            raise PullSecretError(f"pull secret {secret_name!r} (for registry {registry!r}) has no 'auths' object")
        return auths

    def _path(self, secret_name: str, registry: str) -> Path:
        candidates = (self._root / secret_name / DOCKERCONFIG_FILE, self._root / f"{secret_name}.json")
        for candidate in candidates:
            if candidate.is_file():
                return candidate
        logger.warning("pull secret %r: neither %s nor %s is a file", secret_name, *candidates)
        raise PullSecretError(
            f"pull secret {secret_name!r} (for registry {registry!r}) not found: the worker has neither "
            f"{secret_name}/{DOCKERCONFIG_FILE} nor {secret_name}.json in its {SECRETS_DIR_SETTING}"
        )


def _why_unreadable(error: Exception) -> str:
    """Why a secret's file could not be read, in words that hold no path (an OSError's str names its file)."""
    if isinstance(error, OSError):
        return error.strerror or type(error).__name__
    return f"not Docker config JSON ({type(error).__name__})"


def _entry_credentials(secret_name: str, registry: str, entry: object) -> RegistryCredentials:
    if isinstance(entry, dict) and entry.get("username") and entry.get("password") is not None:
        return RegistryCredentials(registry, str(entry["username"]), str(entry["password"]))
    if isinstance(entry, dict) and isinstance(entry.get("auth"), str):
        try:
            username, sep, password = base64.b64decode(entry["auth"], validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            sep = ""
        if sep:
            return RegistryCredentials(registry, username, password)
    raise PullSecretError(
        f"pull secret {secret_name!r}: the entry for {registry!r} needs 'auth' (base64 of user:password) "
        "or 'username' and 'password'"
    )


def pull_credentials(settings: Settings, pull_secret: str | None, registry: str) -> RegistryCredentials | None:
    """The named pull secret's entry for `registry`; else the push user when the base lives on the push registry."""
    if pull_secret:
        return PullSecretStore(settings.pull_secrets_dir).credentials(pull_secret, registry)
    push = push_credentials(settings)
    return push if push and push.registry == registry else None


def push_credentials(settings: Settings) -> RegistryCredentials | None:
    """The push user from Settings, for the endpoint's registry; None for an anonymous local registry."""
    if not settings.registry_username:
        return None
    return RegistryCredentials(
        normalise_registry(settings.registry_endpoint),
        settings.registry_username,
        settings.registry_password.get_secret_value(),
    )
