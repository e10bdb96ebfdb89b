"""Image indexes (OCI image index, Docker manifest list): which platforms one lists, and the one a build pushes."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from core.errors import UnreadableImage
from core.platforms import Platform
from core.reference import is_digest

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
IMAGE_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)


@dataclass(frozen=True)
class Descriptor:
    """A manifest as an index names it: its media type, digest and size in bytes."""

    media_type: str
    digest: str
    size: int


@dataclass(frozen=True)
class PlatformImages:
    """What a tag holds: its own digest (an index's, or a single image's), and its image for each platform."""

    digest: str
    images: dict[str, str]  # `os/arch[/variant]` -> image digest


def is_index(manifest: dict) -> bool:
    return manifest.get("mediaType") in INDEX_TYPES or isinstance(manifest.get("manifests"), list)


def listed_platforms(index: dict) -> dict[str, str]:
    """`os/arch[/variant]` -> the digest of that platform's image, for each image entry of `index` (attestations
    and other entries without a platform are not images to run; the first of a repeated platform counts)."""
    found: dict[str, str] = {}
    for entry in index.get("manifests") or []:
        platform = entry.get("platform") if isinstance(entry, dict) else None
        digest = entry.get("digest") if isinstance(entry, dict) else None
        if isinstance(platform, dict) and isinstance(digest, str) and is_digest(digest):
            found.setdefault(platform_name(platform), digest)
    found.pop("unknown/unknown", None)  # BuildKit's attestation manifests
    return found


def platform_name(platform: dict) -> str:
    """`linux/arm64` from an entry's platform (or an image config's os, architecture and variant)."""
    parts = [platform.get("os"), platform.get("architecture"), platform.get("variant")]
    if parts[1] == "arm64" and parts[2] == "v8":  # the usual arm64 is v8: Docker writes it either way
        parts[2] = None
    return "/".join(str(part) for part in parts if part)


def index_for(images: dict[Platform, Descriptor]) -> tuple[str, bytes]:
    """The media type and body of an index naming each platform's image, in canonical order: a Docker manifest list
    over Docker manifests (what the engine pushes), else an OCI index."""
    media_type = DOCKER_LIST if all(d.media_type == DOCKER_MANIFEST for d in images.values()) else OCI_INDEX
    entries = [{"mediaType": d.media_type, "digest": d.digest, "size": d.size, "platform": _platform_of(p)}
               for p, d in sorted(images.items(), key=lambda item: item[0].value)]
    return media_type, json.dumps({"schemaVersion": 2, "mediaType": media_type, "manifests": entries}).encode()


def _platform_of(platform: Platform) -> dict[str, str]:
    described = {"architecture": platform.architecture, "os": platform.os}
    return described | ({"variant": platform.variant} if platform.variant else {})


def content_digest(body: bytes) -> str:
    """The digest a registry names a manifest or blob with: `sha256:<hex>` of its bytes."""
    return f"sha256:{hashlib.sha256(body).hexdigest()}"


def referrers_tag(digest: str) -> str:
    """The OCI referrers tag schema's tag for the manifests referring to `digest`: `sha256-<hex>`."""
    algorithm, _, hex_digest = digest.partition(":")
    return f"{algorithm}-{hex_digest}"


def descriptor(media_type: str | None, digest: str | None, size: str | None, what: str) -> Descriptor:
    """A descriptor from a HEAD's headers; UnreadableImage if the registry left one out."""
    if media_type not in IMAGE_TYPES or not digest or not is_digest(digest) or not (size or "").isdigit():
        raise UnreadableImage(f"the registry described {what} without a usable media type, digest and size")
    return Descriptor(media_type, digest, int(size))
