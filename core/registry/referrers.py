"""Attaching an SBOM to an image in its registry, and finding it again: through the referrers API where the
registry has one, else through the referrers tag schema, so that any OCI 1.1 client finds it either way."""

from __future__ import annotations

import dataclasses

from core.errors import NoSbom
from core.reference import ImageReference
from core.registry.artifacts import (
    EMPTY_BLOB,
    sbom_layer,
    sbom_manifest,
    sbom_referrers,
    with_referrer,
)
from core.registry.client import RegistryClient
from core.registry.imageindex import (
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    content_digest,
    referrers_tag,
)

MAX_SBOM_BYTES = 64 * 1024 * 1024  # tens of thousands of packages; a document larger than this is not an SBOM


def attach_sbom(registry: RegistryClient, image: ImageReference, subject: Descriptor, sbom: bytes) -> str:
    """Push `sbom` as an artifact referring to `subject` in `image`'s repository: the artifact manifest's digest.
    Where the registry does not say it indexed the subject, the referrers tag's index lists it (once)."""
    registry.put_blob(image, EMPTY_BLOB)
    registry.put_blob(image, sbom)
    manifest = sbom_manifest(sbom, subject)
    digest = content_digest(manifest)
    if not registry.put_manifest(dataclasses.replace(image, tag=None, digest=digest), OCI_MANIFEST, manifest):
        tag = dataclasses.replace(image, tag=referrers_tag(subject.digest), digest=None)
        index = with_referrer(registry.manifest_document(tag), manifest)
        if index is not None:
            registry.put_manifest(tag, OCI_INDEX, index)
    return digest


def find_sbom(registry: RegistryClient, image: ImageReference, subject_digest: str) -> bytes | None:
    """The newest SBOM attached to `subject_digest` in `image`'s repository; None if there is none."""
    index = registry.referrers(image, subject_digest)
    for digest in sbom_referrers(index or {}):
        manifest = registry.manifest_document(dataclasses.replace(image, tag=None, digest=digest))
        layer = sbom_layer(manifest or {})
        if layer is not None:
            return registry.blob(image, layer, MAX_SBOM_BYTES)
    return None


def platform_image(registry: RegistryClient, image: ImageReference, digest: str, platform: str | None) -> str:
    """The digest of the image for `platform` among those `digest` names in `image`'s repository (an index, or one
    image); without a platform, the only one, or the first by name. NoSbom for a platform it lacks."""
    images = registry.platform_images(dataclasses.replace(image, tag=None, digest=digest)).images
    if platform is None:
        return images[min(images)] if images else digest
    if platform not in images:
        raise NoSbom(f"platform: the image has no {platform} image, only {', '.join(sorted(images))}")
    return images[platform]
