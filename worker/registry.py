"""Registry adapter: manifest HEADs over the distribution HTTP API, and the one map from registry failures
(HTTP statuses, or messages the engine relays) to domain errors."""

from __future__ import annotations

import re

import requests

from worker.credentials import RegistryCredentials
from worker.errors import AuthFailed, BaseImageNotFound, ImageBuilderError, PushFailed, RegistryUnavailable
from worker.reference import ImageReference, is_loopback

MANIFEST_MEDIA_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
DIGEST_HEADER = "Docker-Content-Digest"
_CHALLENGE_PARAM_RE = re.compile(r'(\w+)="([^"]*)"')

_AUTH_MARKERS = ("unauthorized", "authentication required", "denied", "forbidden", "401", "403", "incorrect username")
_UNAVAILABLE_MARKERS = (
    "connection refused", "no such host", "timeout", "timed out", "i/o timeout", "toomanyrequests",
    "429", "500 internal", "502", "503", "504", "bad gateway", "service unavailable", "eof", "connection reset",
    "tls handshake",
)
_NOT_FOUND_MARKERS = ("not found", "manifest unknown", "name unknown", "does not exist")


def error_for_status(status: int, registry: str, action: str, retry_after: str | None = None) -> ImageBuilderError:
    """The domain error for an HTTP status a registry answered to `action` (e.g. 'pull of x')."""
    if status in (401, 403):
        return AuthFailed(f"registry {registry} rejected the credentials for {action} (HTTP {status})")
    if status == 429 or status >= 500:
        return RegistryUnavailable(
            f"registry {registry} is unavailable for {action} (HTTP {status})", _seconds(retry_after)
        )
    if status == 404:
        return BaseImageNotFound(f"{action}: not found in registry {registry} (HTTP 404)")
    return PushFailed(f"registry {registry} refused {action} (HTTP {status})")


def error_for_message(message: str, registry: str, action: str) -> ImageBuilderError:
    """The domain error for a failure the Docker engine relayed from a registry, by its message."""
    lowered = message.lower()
    if any(marker in lowered for marker in _AUTH_MARKERS):
        return AuthFailed(f"registry {registry} rejected the credentials for {action}: {message}")
    if any(marker in lowered for marker in _UNAVAILABLE_MARKERS):
        return RegistryUnavailable(f"registry {registry} is unavailable for {action}: {message}")
    if any(marker in lowered for marker in _NOT_FOUND_MARKERS):
        return BaseImageNotFound(f"{action}: not found in registry {registry}: {message}")
    return PushFailed(f"{action} failed at registry {registry}: {message}")


def _seconds(retry_after: str | None) -> float | None:
    try:
        return float(retry_after) if retry_after else None
    except ValueError:
        return None


class RegistryClient:
    """Talks to one registry's HTTP API with optional credentials (Basic, or Bearer tokens as Docker Hub uses)."""

    def __init__(
        self,
        registry: str,
        credentials: RegistryCredentials | None = None,
        *,
        insecure_registries: frozenset[str] = frozenset(),
        timeout_s: float = 30,
    ):
        self._registry = registry
        self._credentials = credentials
        self._insecure = registry in insecure_registries or is_loopback(registry)
        self._timeout_s = timeout_s
        self._session = requests.Session()

    def __repr__(self) -> str:
        return f"RegistryClient(registry={self._registry!r}, credentials={self._credentials!r})"

    def manifest_digest(self, reference: ImageReference) -> str | None:
        """HEAD the manifest (a GET would count as a pull on Docker Hub): its digest, or None if absent."""
        scheme = "http" if self._insecure else "https"
        url = f"{scheme}://{reference.api_host}/v2/{reference.repository}/manifests/{reference.manifest_reference}"
        action = f"manifest check of {reference}"
        response = self._request(url, f"repository:{reference.repository}:pull", action)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise error_for_status(response.status_code, self._registry, action, response.headers.get("Retry-After"))
        return response.headers.get(DIGEST_HEADER)

    def _request(self, url: str, scope: str, action: str) -> requests.Response:
        headers = {"Accept": ", ".join(MANIFEST_MEDIA_TYPES)}
        response = self._send("HEAD", url, headers, action)
        if response.status_code != 401:
            return response
        challenge = response.headers.get("WWW-Authenticate", "")
        scheme, _, params = challenge.partition(" ")
        if scheme.lower() == "bearer":
            headers["Authorization"] = f"Bearer {self._token(dict(_CHALLENGE_PARAM_RE.findall(params)), scope, action)}"
            return self._send("HEAD", url, headers, action)
        if scheme.lower() == "basic" and self._credentials:
            return self._send("HEAD", url, headers, action, auth=self._basic_auth())
        return response

    def _token(self, challenge: dict[str, str], scope: str, action: str) -> str:
        if "realm" not in challenge:
            raise AuthFailed(f"registry {self._registry} sent a Bearer challenge without a realm for {action}")
        params = {"service": challenge.get("service", ""), "scope": challenge.get("scope", scope)}
        auth = self._basic_auth() if self._credentials else None
        response = self._send("GET", challenge["realm"], {}, action, params=params, auth=auth)
        if response.status_code != 200:
            raise error_for_status(response.status_code, self._registry, action, response.headers.get("Retry-After"))
        body = response.json()
        return body.get("token") or body.get("access_token") or ""

    def _basic_auth(self) -> tuple[str, str] | None:
        return (self._credentials.username, self._credentials.password) if self._credentials else None

    def _send(self, method: str, url: str, headers: dict[str, str], action: str, **kwargs) -> requests.Response:
        try:
            return self._session.request(method, url, headers=headers, timeout=self._timeout_s, **kwargs)
        except requests.RequestException as e:
            raise RegistryUnavailable(
                f"registry {self._registry} is unreachable for {action}: {type(e).__name__}"
            ) from None
