"""Registry adapter: manifest HEADs (and, where a HEAD cannot tell, an image's labels), the platforms an image has,
and pushing an image index, over the distribution HTTP API; and the one map from registry failures (HTTP statuses,
or messages the engine relays) to domain errors."""

from __future__ import annotations

import base64
import collections
import dataclasses
import ipaddress
import json
import math
import os
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

import requests

from config.settings import Settings
from core.errors import (
    AuthFailed,
    BaseImageNotFound,
    ImageBuilderError,
    PushFailed,
    RegistryUnavailable,
    UnreadableImage,
    UnsafeTokenRealm,
)
from core.platforms import Platform
from core.reference import ImageReference, is_digest, plain_http_allowed
from core.registry.credentials import RegistryCredentials
from core.registry.imageindex import (
    IMAGE_TYPES,
    OCI_INDEX,
    Descriptor,
    PlatformImages,
    content_digest,
    descriptor,
    index_for,
    is_index,
    listed_platforms,
    platform_name,
    referrers_tag,
)

MANIFEST_MEDIA_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
DIGEST_HEADER = "Docker-Content-Digest"
_CHALLENGE_PARAM_RE = re.compile(r'(\w+)="([^"]*)"')
MAX_TOKEN_ANSWER_BYTES = 1 << 20  # Docker Hub's tokens are a few KiB; anything this large is not a token
DEFAULT_TOKEN_LIFE_S = 60  # the token spec's lifetime for an answer without `expires_in`
MAX_RENEW_MARGIN_S = 10  # a token is renewed this long (at most a tenth of its life) before it expires
MAX_DOCUMENT_BYTES = 4 << 20  # the distribution registry's own limit for a manifest; an image config is smaller
MAX_BLOB_REDIRECTS = 3  # a registry may send a blob GET to its storage (S3, a CDN): that far and no further
DOCUMENT_TIMEOUTS = 2  # a manifest or config is read within this many request timeouts, however slowly it comes
MAX_CLIENTS_KEPT = 256
_EVERY_SCOPE = "*"  # Basic credentials are good for every repository of their registry
# Where no registry's token service lives, but a cloud's instance credentials do.
FORBIDDEN_REALM_NETWORKS = tuple(ipaddress.ip_network(n) for n in ("169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128"))

# Words the engine's relayed messages use. A status code counts only as a whole number: the registry's own
# port (127.0.0.1:40361) must not read as HTTP 403.
_AUTH_MARKERS = re.compile(
    r"unauthorized|authentication required|denied|forbidden|incorrect username|(?<![\d.:])(?:401|403)(?!\d)")
_UNAVAILABLE_MARKERS = re.compile(
    r"connection refused|no such host|timeout|timed out|toomanyrequests|500 internal|bad gateway|"
    r"service unavailable|\beof\b|connection reset|tls handshake|(?<![\d.:])(?:429|502|503|504)(?!\d)")
_NOT_FOUND_MARKERS = ("not found", "manifest unknown", "name unknown", "does not exist")


def error_for_status(status: int, registry: str, action: str, retry_after: str | None = None) -> ImageBuilderError:
    """The domain error for an HTTP status a registry answered to `action` (e.g. 'pull of x')."""
    if status in (401, 403):
        return AuthFailed(f"registry {registry} rejected the credentials for {action} (HTTP {status})")
    if 300 <= status < 400:
        return RegistryUnavailable(f"registry {registry} answered {action} with a redirect (HTTP {status}), "
                                   "which is not followed")
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
    if _AUTH_MARKERS.search(lowered):
        return AuthFailed(f"registry {registry} rejected the credentials for {action}: {message}")
    if _UNAVAILABLE_MARKERS.search(lowered):
        return RegistryUnavailable(f"registry {registry} is unavailable for {action}: {message}")
    if any(marker in lowered for marker in _NOT_FOUND_MARKERS):
        return BaseImageNotFound(f"{action}: not found in registry {registry}: {message}")
    return PushFailed(f"{action} failed at registry {registry}: {message}")


def _seconds(retry_after: str | None) -> float | None:
    try:
        return float(retry_after) if retry_after else None
    except ValueError:
        return None


@dataclass(frozen=True)
class _Grant:
    """An Authorization header the registry accepted, and until when (monotonic seconds) to send it unasked."""

    header: str = field(repr=False)
    expires_at: float


class RegistryClient:
    """Talks to one registry's HTTP API with optional credentials (Basic, or Bearer tokens as Docker Hub uses).

    Kept for the life of a process: its session keeps connections open, and the authorization a registry
    accepted is sent up front until it expires, so a HEAD costs one request, not a challenge and a token too."""

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
        self._insecure_registries = insecure_registries
        self._insecure = plain_http_allowed(registry, insecure_registries)
        self._timeout_s = timeout_s
        self._session = requests.Session()
        # The environment (proxies, CA bundle) is read once per host here, as requests would read it on every
        # request; and ~/.netrc is never consulted, so no stray credentials go to a token realm.
        self._session.trust_env = False
        self._verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
        self._proxies: dict[str, dict[str, str]] = {}  # by scheme://host
        self._grants: dict[str, _Grant] = {}  # by scope

    def __repr__(self) -> str:
        return f"RegistryClient(registry={self._registry!r}, credentials={self._credentials!r})"

    def manifest_digest(self, reference: ImageReference) -> str | None:
        """HEAD the manifest (a GET would count as a pull on Docker Hub): its digest, or None if absent."""
        action = f"manifest check of {reference}"
        response = self._request("HEAD", self._manifest_url(reference), reference, action)
        if response.status_code == 404:
            return None
        self._require_ok(response, action)
        return response.headers.get(DIGEST_HEADER)

    def image_labels(self, reference: ImageReference) -> dict[str, str]:
        """The labels in the image's config: a manifest GET (which Docker Hub counts as a pull, so this is for
        the rare question a HEAD cannot answer) and a GET of its config blob; for an image index, of its first
        linux/amd64 image (else its first). BaseImageNotFound if the image is not there."""
        manifest = self._document("manifest", self._manifest_url(reference), reference)
        if isinstance(manifest.get("manifests"), list):
            child = dataclasses.replace(reference, digest=_first_image_of(manifest["manifests"], reference))
            manifest = self._document("manifest", self._manifest_url(child), reference)
        labels = _path(self._config(manifest, reference), "config", "Labels")
        return {k: v for k, v in labels.items() if isinstance(v, str)} if isinstance(labels, dict) else {}

    def platform_images(self, reference: ImageReference) -> PlatformImages:
        """The tag's digest and its image for each platform: one manifest GET for an index; a single image's
        platform is in its config, one GET more. BaseImageNotFound if it is not there."""
        body = self._body("manifest", self._manifest_url(reference), reference)
        manifest = self._json_object(body, f"read of the manifest of {reference}")
        digest = content_digest(body)
        if is_index(manifest):
            return PlatformImages(digest, listed_platforms(manifest))
        return PlatformImages(digest, {platform_name(self._config(manifest, reference)): digest})

    def image_descriptor(self, reference: ImageReference) -> Descriptor:
        """The media type, digest and size of the image manifest at `reference` (a HEAD), as an index names it."""
        action = f"manifest check of {reference}"
        response = self._request("HEAD", self._manifest_url(reference), reference, action, accept=IMAGE_TYPES)
        self._require_ok(response, action)
        headers = response.headers
        return descriptor(headers.get("Content-Type"), headers.get(DIGEST_HEADER), headers.get("Content-Length"),
                          f"the image {reference}")

    def put_index(self, reference: ImageReference, images: dict[Platform, Descriptor]) -> str:
        """Tag `reference` with an index of `images` (already in its repository): the index's digest."""
        media_type, body = index_for(images)
        response = self._put_manifest(reference, media_type, body, f"push of the image index {reference}")
        return response.headers.get(DIGEST_HEADER) or content_digest(body)

    def put_blob(self, reference: ImageReference, body: bytes) -> str:
        """Upload `body` to the reference's repository unless it is there already (a HEAD): its digest."""
        digest = content_digest(body)
        action = f"upload of blob {digest} to {reference.name}"
        there = self._request("HEAD", self._blob_url(reference, digest), reference, action, access="pull,push")
        if there.status_code == 200:
            return digest
        location = self._upload_location(reference, action)
        joiner = "&" if urlsplit(location).query else "?"
        response = self._request("PUT", f"{location}{joiner}digest={digest}", reference, action, access="pull,push",
                                 data=body, content_type="application/octet-stream")
        self._require_created(response, action)
        return digest

    def _upload_location(self, reference: ImageReference, action: str) -> str:
        """Where the registry takes a new blob: its own host only (the upload carries the credentials)."""
        url = f"{self._base_url(reference)}/blobs/uploads/"
        response = self._request("POST", url, reference, action, access="pull,push")
        if response.status_code != 202:
            self._require_ok(response, action)
            raise PushFailed(f"registry {self._registry} answered the {action} with HTTP {response.status_code}")
        location = urljoin(url, response.headers.get("Location", ""))
        if urlsplit(location).netloc != urlsplit(url).netloc:
            raise PushFailed(f"registry {self._registry} sent the {action} to another host: refused")
        return location

    def put_manifest(self, reference: ImageReference, media_type: str, body: bytes) -> bool:
        """PUT a manifest at `reference` (a tag, or its own digest); whether the registry says it indexed the
        manifest's subject for the referrers API (OCI-Subject)."""
        response = self._put_manifest(reference, media_type, body, f"push of the manifest {reference}")
        return bool(response.headers.get("OCI-Subject"))

    def _put_manifest(self, reference: ImageReference, media_type: str, body: bytes,
                      action: str) -> requests.Response:
        response = self._request("PUT", self._manifest_url(reference), reference, action, access="pull,push",
                                 data=body, content_type=media_type)
        self._require_created(response, action)
        return response

    def tag_manifest(self, source: ImageReference, target: ImageReference) -> str:
        """Tag `target` with the manifest at `source` in the same repository, byte for byte: its digest."""
        body = self._body("manifest", self._manifest_url(source), source)
        media_type = self._json_object(body, f"read of the manifest of {source}").get("mediaType")
        if media_type not in MANIFEST_MEDIA_TYPES:
            raise UnreadableImage(f"registry {self._registry} answered the manifest of {source} without its type")
        self.put_manifest(target, media_type, body)
        return content_digest(body)

    def referrers(self, reference: ImageReference, subject_digest: str) -> dict | None:
        """The index of the manifests referring to `subject_digest`: the referrers API's answer, else the
        referrers tag schema's index (`sha256-<hex>` in the repository); None where neither has one."""
        url = f"{self._base_url(reference)}/referrers/{subject_digest}"
        action = f"read of the referrers of {reference.name}@{subject_digest}"
        response = self._request("GET", url, reference, action, accept=(OCI_INDEX,))
        with response:
            if response.status_code == 200:
                return self._json_object(self._bounded_body(response, action, MAX_DOCUMENT_BYTES,
                                                            time.monotonic() + self._timeout_s), action)
        return self.manifest_document(dataclasses.replace(reference, tag=referrers_tag(subject_digest), digest=None))

    def manifest_document(self, reference: ImageReference) -> dict | None:
        """The manifest or index at `reference`, as JSON; None if there is none."""
        try:
            return self._document("manifest", self._manifest_url(reference), reference)
        except BaseImageNotFound:
            return None

    def blob(self, reference: ImageReference, digest: str, most_bytes: int) -> bytes:
        """A blob of the reference's repository, at most `most_bytes`, checked against its digest."""
        body = self._body("blob", self._blob_url(reference, digest), reference, most_bytes)
        if content_digest(body) != digest:
            raise UnreadableImage(f"registry {self._registry} served blob {digest} with other content")
        return body

    def _require_created(self, response: requests.Response, action: str) -> None:
        if response.status_code != 201:
            self._require_ok(response, action)
            raise PushFailed(f"registry {self._registry} answered the {action} with HTTP {response.status_code}")

    def _config(self, manifest: dict, reference: ImageReference) -> dict:
        """The image config an image manifest names."""
        config_digest = _path(manifest, "config", "digest")
        if not isinstance(config_digest, str) or not is_digest(config_digest):
            raise UnreadableImage(f"registry {self._registry} answered the manifest of {reference} without a config")
        return self._document("config", self._blob_url(reference, config_digest), reference)

    def _manifest_url(self, reference: ImageReference) -> str:
        return f"{self._base_url(reference)}/manifests/{reference.manifest_reference}"

    def _blob_url(self, reference: ImageReference, digest: str) -> str:
        return f"{self._base_url(reference)}/blobs/{digest}"

    def _base_url(self, reference: ImageReference) -> str:
        return f"{'http' if self._insecure else 'https'}://{reference.api_host}/v2/{reference.repository}"

    def _document(self, what: str, url: str, reference: ImageReference) -> dict:
        """A JSON object the registry serves (a manifest or an image config)."""
        return self._json_object(self._body(what, url, reference), f"read of the {what} of {reference}")

    def _body(self, what: str, url: str, reference: ImageReference, most_bytes: int = MAX_DOCUMENT_BYTES) -> bytes:
        """A document the registry serves, read within `most_bytes` and DOCUMENT_TIMEOUTS request timeouts; a
        blob's redirect to storage is followed, to a safe address only."""
        action = f"read of the {what} of {reference}"
        deadline = time.monotonic() + DOCUMENT_TIMEOUTS * self._timeout_s
        response = self._request("GET", url, reference, action, stream=True)
        for _ in range(MAX_BLOB_REDIRECTS if what != "manifest" else 0):
            if not response.is_redirect:
                break
            response = self._redirected(response, url, action)
        with response:
            if response.status_code == 404:
                raise BaseImageNotFound(f"{action}: not found in registry {self._registry} (HTTP 404)")
            self._require_ok(response, action)
            return self._bounded_body(response, f"its answer to the {action}", most_bytes, deadline)

    def _redirected(self, response: requests.Response, url: str, action: str) -> requests.Response:
        """Where a redirect leads, asked without credentials, once that address is known to be safe."""
        location = urljoin(url, response.headers.get("Location", ""))
        response.close()
        if reason := self._unsafe(location, action):
            raise UnreadableImage(f"registry {self._registry} redirected the {action} to {location!r}: refused, "
                                  f"{reason}")
        return self._send("GET", location, {}, action, stream=True)

    def _json_object(self, body: bytes, action: str) -> dict:
        try:
            document = json.loads(body)
        except (ValueError, RecursionError):
            document = None
        if not isinstance(document, dict):
            raise UnreadableImage(f"registry {self._registry} answered the {action} with something other than a "
                                  "JSON object")
        return document

    def _require_ok(self, response: requests.Response, action: str) -> None:
        if response.status_code in (401, 403):
            raise self._refusal(response, action)
        if response.status_code != 200:
            raise error_for_status(response.status_code, self._registry, action, response.headers.get("Retry-After"))

    def _refusal(self, response: requests.Response, action: str) -> AuthFailed:
        """Why the registry still says no after the authorization it asked for: which credentials it refused,
        and its own reason (a token service grants only what an account may do, so a repository the account
        may not read comes back as `insufficient_scope`)."""
        challenge = dict(_CHALLENGE_PARAM_RE.findall(response.headers.get("WWW-Authenticate", "")))
        whose = "the credentials" if self._credentials else "anonymous access (no credentials were given)"
        why = f": {challenge['error'][:100].replace('_', ' ')}" if challenge.get("error") else ""
        return AuthFailed(f"registry {self._registry} rejected {whose} for {action} (HTTP {response.status_code}"
                          f"{why})")

    def _request(self, method: str, url: str, reference: ImageReference, action: str, *, access: str = "pull",
                 accept: tuple[str, ...] = MANIFEST_MEDIA_TYPES, content_type: str | None = None,
                 **kwargs) -> requests.Response:
        """The request, with the authorization the registry accepted before, or the one its challenge asks for."""
        scope = f"repository:{reference.repository}:{access}"
        headers = {"Accept": ", ".join(accept)} | ({"Content-Type": content_type} if content_type else {})
        if grant := self._grant_for(scope):
            headers["Authorization"] = grant.header
        response = self._send(method, url, headers, action, **kwargs)
        if response.status_code != 401:
            return response
        response.close()
        headers.pop("Authorization", None)  # refused or expired early: ask afresh
        self._grants.pop(scope, None)
        self._grants.pop(_EVERY_SCOPE, None)
        grant = self._answer(response.headers.get("WWW-Authenticate", ""), scope, action)
        if grant is None:
            return response
        headers["Authorization"] = grant.header
        return self._send(method, url, headers, action, **kwargs)

    def _grant_for(self, scope: str) -> _Grant | None:
        now = time.monotonic()
        return next((g for key in (scope, _EVERY_SCOPE) if (g := self._grants.get(key)) and now < g.expires_at),
                    None)

    def _answer(self, challenge: str, scope: str, action: str) -> _Grant | None:
        """The authorization a challenge asks for, remembered for the scope it is good for; None if there is
        none to give (Basic without credentials, an unknown scheme)."""
        scheme, _, params = challenge.partition(" ")
        if scheme.lower() == "bearer":
            token, life_s = self._token(dict(_CHALLENGE_PARAM_RE.findall(params)), scope, action)
            key, grant = scope, _Grant(f"Bearer {token}", time.monotonic() + life_s - min(MAX_RENEW_MARGIN_S,
                                                                                           life_s / 10))
        elif scheme.lower() == "basic" and self._credentials:
            pair = f"{self._credentials.username}:{self._credentials.password}".encode()
            key, grant = _EVERY_SCOPE, _Grant(f"Basic {base64.b64encode(pair).decode()}", math.inf)
        else:
            return None
        self._grants[key] = grant
        return grant

    def _token(self, challenge: dict[str, str], scope: str, action: str) -> tuple[str, float]:
        if "realm" not in challenge:
            raise AuthFailed(f"registry {self._registry} sent a Bearer challenge without a realm for {action}")
        realm = self._safe_realm(challenge["realm"], action)
        params = {"service": challenge.get("service", ""), "scope": challenge.get("scope", scope)}
        auth = self._basic_auth() if self._credentials else None
        # Never through a redirect: it could lead the credentials somewhere the realm check never saw.
        response = self._send("GET", realm, {}, action, params=params, auth=auth, stream=True)
        with response:
            if response.status_code != 200:
                raise error_for_status(response.status_code, self._registry, f"the token for {action}",
                                       response.headers.get("Retry-After"))
            body = self._bounded_body(response, f"its token endpoint's answer to {action}", MAX_TOKEN_ANSWER_BYTES)
            return self._token_in(body, action)

    def _token_in(self, body: bytes, action: str) -> tuple[str, float]:
        """The token of a token endpoint's answer, which must be a JSON object carrying one, and how many seconds
        it lasts (`expires_in`, else the spec's default)."""
        try:
            answer = json.loads(body)
        except ValueError:
            answer = None
        token = (answer.get("token") or answer.get("access_token")) if isinstance(answer, dict) else None
        if not isinstance(token, str) or not token:
            raise RegistryUnavailable(
                f"registry {self._registry}'s token endpoint answered {action} with something other than a JSON "
                "object holding a token"
            )
        life_s = answer.get("expires_in", DEFAULT_TOKEN_LIFE_S)
        return token, float(life_s) if isinstance(life_s, (int, float)) and life_s > 0 else 0.0

    def _bounded_body(self, response: requests.Response, what: str, most_bytes: int,
                      deadline: float = math.inf) -> bytes:
        body = b""
        try:
            for chunk in response.iter_content(64 * 1024):
                body += chunk
                if len(body) > most_bytes:
                    raise RegistryUnavailable(f"registry {self._registry} sent more than {most_bytes} bytes in {what}")
                if time.monotonic() > deadline:
                    raise RegistryUnavailable(f"registry {self._registry} took too long over {what}")
        except requests.RequestException as e:
            raise RegistryUnavailable(f"registry {self._registry} broke off {what}: {type(e).__name__}") from None
        return body

    def _safe_realm(self, realm: str, action: str) -> str:
        """The realm, if credentials may go there (see `_unsafe`)."""
        if reason := self._unsafe(realm, action):
            raise UnsafeTokenRealm(f"registry {self._registry} asked for a token from {realm!r} for {action}: "
                                   f"refused, {reason}")
        return realm

    def _unsafe(self, url: str, action: str) -> str | None:
        """Why a request may not go to `url`, or None: it must be http(s) without credentials in it, plain http only
        where registries may use it, and never to a link-local or metadata address (checked for every address
        the name resolves to)."""
        try:
            parts = urlsplit(url)
            port_ok = parts.port is None or parts.port > 0
        except ValueError:
            parts, port_ok = None, False
        if not port_ok or parts.scheme not in ("http", "https") or not parts.hostname or parts.username \
                or parts.password:
            return "it must be an http(s) URL without credentials in it"
        metadata = "it is a link-local or cloud metadata address"
        if _forbidden_literal(parts.hostname):
            return metadata
        if parts.scheme == "http" and not plain_http_allowed(parts.netloc, self._insecure_registries):
            return "plain http is for loopback and IMAGEBUILDER_INSECURE_REGISTRIES only"
        if any(_forbidden(address) for address in self._addresses(parts, action)):  # a name that leads there
            return metadata
        return None

    def _addresses(self, parts, action: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
            infos = socket.getaddrinfo(parts.hostname, port, proto=socket.IPPROTO_TCP)
        except (OSError, ValueError, UnicodeError) as e:
            raise RegistryUnavailable(f"{parts.hostname}, where registry {self._registry} sent the {action}, cannot "
                                      f"be resolved: {type(e).__name__}") from None
        return [ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in infos]

    def _basic_auth(self) -> tuple[str, str] | None:
        return (self._credentials.username, self._credentials.password) if self._credentials else None

    def _send(self, method: str, url: str, headers: dict[str, str], action: str, **kwargs) -> requests.Response:
        """One request, never following a redirect on its own (the blob GET checks where one leads first)."""
        kwargs.setdefault("allow_redirects", False)
        try:
            return self._session.request(method, url, headers=headers, timeout=self._timeout_s, verify=self._verify,
                                         proxies=self._proxies_for(url), **kwargs)
        except requests.RequestException as e:
            raise RegistryUnavailable(
                f"registry {self._registry} is unreachable for {action}: {type(e).__name__}"
            ) from None

    def _proxies_for(self, url: str) -> dict[str, str]:
        """The proxies the environment sets for the URL's host (honouring NO_PROXY), as requests works them out."""
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        if origin not in self._proxies:
            self._proxies[origin] = requests.utils.get_environ_proxies(url)
        return self._proxies[origin]


def _first_image_of(entries: list, reference: ImageReference) -> str:
    """The digest of an index's linux/amd64 image, else of its first entry."""
    digests = [(_path(e, "platform", "os"), _path(e, "platform", "architecture"), _path(e, "digest")) for e in entries]
    valid = [(os_, arch, d) for os_, arch, d in digests if isinstance(d, str) and is_digest(d)]
    if not valid:
        raise UnreadableImage(f"the image index of {reference} names no image")
    return next((d for os_, arch, d in valid if (os_, arch) == ("linux", "amd64")), valid[0][2])


def _path(value: object, *keys: str) -> object:
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value


class RegistrySessions:
    """A process's registry clients, one per registry and credentials, made once and kept (the newest
    MAX_CLIENTS_KEPT), so that connections and accepted authorizations outlive any one build."""

    def __init__(self, *, insecure_registries: frozenset[str], timeout_s: float):
        self._insecure_registries = insecure_registries
        self._timeout_s = timeout_s
        self._clients: collections.OrderedDict[tuple, RegistryClient] = collections.OrderedDict()

    def client(self, registry: str, credentials: RegistryCredentials | None) -> RegistryClient:
        key = (registry, credentials)
        if key not in self._clients:
            self._clients[key] = RegistryClient(registry, credentials, insecure_registries=self._insecure_registries,
                                                timeout_s=self._timeout_s)
            if len(self._clients) > MAX_CLIENTS_KEPT:
                self._clients.popitem(last=False)
        self._clients.move_to_end(key)
        return self._clients[key]


def _forbidden_literal(host: str) -> bool:
    try:
        return _forbidden(ipaddress.ip_address(host))
    except ValueError:  # a name: resolved and checked once the cheaper rules have passed
        return False


def _forbidden(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    address = getattr(address, "ipv4_mapped", None) or address
    return address.is_link_local or any(address in network for network in FORBIDDEN_REALM_NETWORKS
                                        if network.version == address.version)


def registry_sessions(settings: Settings) -> RegistrySessions:
    """A process's registry clients, as its settings say to speak to registries."""
    return RegistrySessions(insecure_registries=frozenset(settings.insecure_registries),
                            timeout_s=settings.registry_timeout_s)


class ThreadRegistrySessions:
    """The calling thread's registry sessions in this process, made on first use: a requests session is not shared
    between threads (a thread pool's), and a prefork child never uses its parent's sockets."""

    def __init__(self, settings: Settings):
        self._settings = settings
        self._local = threading.local()

    def get(self) -> RegistrySessions:
        if getattr(self._local, "pid", None) != os.getpid():
            self._local.sessions, self._local.pid = registry_sessions(self._settings), os.getpid()
        return self._local.sessions
