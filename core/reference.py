"""Docker image references: parsing by the distribution grammar and Docker Hub's normalisation."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

DOCKER_HUB = "docker.io"
DOCKER_HUB_API_HOST = "registry-1.docker.io"
DOCKER_HUB_LOGIN_SERVER = "https://index.docker.io/v1/"
DOCKER_HUB_ALIASES = frozenset(
    {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}
)
MAX_REPOSITORY_LEN = 255

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|-+)"
PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_REFERENCE_RE = re.compile(
    rf"^(?:(?P<domain>{_DOMAIN})/)?(?P<path>{PATH_COMPONENT}(?:/{PATH_COMPONENT})*)"
    rf"(?::(?P<tag>{TAG}))?(?:@(?P<digest>{_DIGEST}))?",
    re.ASCII,
)
_TAG_RE = re.compile(TAG, re.ASCII)
_DIGEST_RE = re.compile(_DIGEST, re.ASCII)


@dataclass(frozen=True)
class ImageReference:
    """A parsed reference: `registry` is normalised (Docker Hub is `docker.io`), `repository` is the path."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def api_host(self) -> str:
        """The host that serves the registry HTTP API for this reference."""
        return DOCKER_HUB_API_HOST if self.registry == DOCKER_HUB else self.registry

    @property
    def name(self) -> str:
        """registry/repository, the form Docker pulls and pushes by."""
        return f"{self.registry}/{self.repository}"

    @property
    def manifest_reference(self) -> str:
        """What goes after `/manifests/`: the digest when pinned, else the tag (`latest` by default)."""
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def _looks_like_domain(component: str) -> bool:
    return "." in component or ":" in component or component == "localhost" or component != component.lower()


def parse_reference(text: str) -> ImageReference:
    """Parse and normalise `text`; raise ValueError with the rule it breaks."""
    match = _REFERENCE_RE.fullmatch(text)
    if not match:
        raise ValueError(
            "is not a Docker image reference: expected [host[:port]/]path[:tag][@digest] with a "
            "lowercase path of components separated by '/'"
        )
    domain, path = match["domain"], match["path"]
    if domain and not _looks_like_domain(domain):
        domain, path = None, f"{domain}/{path}"
    registry = normalise_registry(domain or DOCKER_HUB)
    if registry == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    if len(path) > MAX_REPOSITORY_LEN:
        raise ValueError(f"has a repository path longer than {MAX_REPOSITORY_LEN} characters")
    return ImageReference(registry, path, match["tag"], match["digest"])


def normalise_registry(host: str) -> str:
    """`https://index.docker.io/v1/` and the other Hub aliases → `docker.io`; URLs → host[:port]."""
    host = re.sub(r"^[a-z]+://", "", host.strip()).split("/", 1)[0].lower()
    return DOCKER_HUB if host in DOCKER_HUB_ALIASES else host


def is_valid_tag(tag: str) -> bool:
    return bool(_TAG_RE.fullmatch(tag))


def is_digest(text: str) -> bool:
    """`algorithm:hex`, as a content digest is written (`sha256:...`)."""
    return bool(_DIGEST_RE.fullmatch(text))


def host_of(registry: str) -> str:
    """`host[:port]` or `[v6]:port` → the host alone (brackets dropped)."""
    if registry.startswith("["):
        return registry[1:].split("]", 1)[0]
    return registry.rsplit(":", 1)[0] if registry.count(":") == 1 else registry


def is_loopback(registry: str) -> bool:
    """A loopback IP or `localhost`, which Docker speaks to over plain http without configuration.
    A name that only looks like one (`127.evil.example`) is not."""
    host = host_of(registry).lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def plain_http_allowed(registry: str, insecure_registries: frozenset[str]) -> bool:
    """Plain http: loopback, or a host (with or without its port) listed in IMAGEBUILDER_INSECURE_REGISTRIES."""
    return is_loopback(registry) or registry in insecure_registries or host_of(registry) in insecure_registries
