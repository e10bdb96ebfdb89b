"""What both sides know of the SBOMs this service makes: their artifact type, the properties it writes in them,
and reading their packages back."""

import json

SBOM_MEDIA_TYPE = "application/vnd.cyclonedx+json"  # the artifact type, and its one layer's media type
REQUESTED_PROPERTY = "imagebuilder:requested"  # "true" on the packages the spec asked for
SKIPPED_PROPERTY = "imagebuilder:skipped:{source}"  # records of a package database that could not be read
BASE_IMAGE_PROPERTY = "imagebuilder:base-image"


def library_components(sbom: bytes) -> list[dict]:
    """The `library` components of a CycloneDX JSON document (none from a document of another shape, as one found
    in a registry may be); ValueError if it is not JSON."""
    document = json.loads(sbom)
    listed = document.get("components") if isinstance(document, dict) else None
    return [c for c in listed if isinstance(c, dict) and c.get("type") == "library"] if isinstance(listed, list) else []
