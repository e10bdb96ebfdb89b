"""The OCI documents that attach an SBOM to an image in its registry: an artifact manifest whose `subject` is the
image, and, for registries without the referrers API, the referrers tag schema's index (`sha256-<hex>`), which lists
every manifest that refers to the image (OCI distribution spec 1.1)."""

from __future__ import annotations

import json

from core.registry.imageindex import OCI_INDEX, OCI_MANIFEST, Descriptor, content_digest
from core.sbom import SBOM_MEDIA_TYPE

EMPTY_MEDIA_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY_BLOB = b"{}"  # the OCI empty descriptor's content: an artifact with no config of its own names it


def sbom_manifest(sbom: bytes, subject: Descriptor) -> bytes:
    """The artifact manifest: the empty config, one layer holding the SBOM, and the image as its subject."""
    return _canonical({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": SBOM_MEDIA_TYPE,
        "config": {"mediaType": EMPTY_MEDIA_TYPE, "digest": content_digest(EMPTY_BLOB), "size": len(EMPTY_BLOB)},
        "layers": [{"mediaType": SBOM_MEDIA_TYPE, "digest": content_digest(sbom), "size": len(sbom)}],
        "subject": {"mediaType": subject.media_type, "digest": subject.digest, "size": subject.size},
    })


def with_referrer(index: dict | None, manifest: bytes) -> bytes | None:
    """The referrers index with the artifact manifest added (a new index if there was none); None if it lists it
    already (a build delivered again attaches nothing twice)."""
    entry = {"mediaType": OCI_MANIFEST, "digest": content_digest(manifest), "size": len(manifest),
             "artifactType": SBOM_MEDIA_TYPE}
    entries = [e for e in (index or {}).get("manifests") or [] if isinstance(e, dict)]
    if any(e.get("digest") == entry["digest"] for e in entries):
        return None
    return _canonical({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [*entries, entry]})


def sbom_layer(manifest: dict) -> str | None:
    """The digest of the SBOM an artifact manifest holds, if it is one."""
    layers = manifest.get("layers") if manifest.get("artifactType") == SBOM_MEDIA_TYPE else None
    found = [layer.get("digest") for layer in layers or [] if isinstance(layer, dict)
             and layer.get("mediaType") == SBOM_MEDIA_TYPE]
    return found[0] if found and isinstance(found[0], str) else None


def sbom_referrers(index: dict) -> list[str]:
    """The digests of the SBOM manifests a referrers index lists, newest (last added) first."""
    return [e["digest"] for e in reversed(index.get("manifests") or []) if isinstance(e, dict)
            and e.get("artifactType") == SBOM_MEDIA_TYPE and isinstance(e.get("digest"), str)]


def _canonical(document: dict) -> bytes:
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()
