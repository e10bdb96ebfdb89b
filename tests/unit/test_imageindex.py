"""Image indexes: the platforms one lists, and the one a build pushes."""

import json

import pytest

from core.errors import UnreadableImage
from core.platforms import Platform
from core.registry.imageindex import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    descriptor,
    index_for,
    listed_platforms,
)

D1, D2, D3 = (f"sha256:{c * 64}" for c in "abc")


def test_the_platforms_of_an_index_are_its_image_entries():
    # Given an index as Docker Hub serves one: amd64, arm64 written as v8, arm/v7, and BuildKit's attestation
    index = {"mediaType": OCI_INDEX, "manifests": [
        {"digest": D1, "platform": {"os": "linux", "architecture": "amd64"}},
        {"digest": D2, "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
        {"digest": D3, "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}},
        {"digest": D3, "platform": {"os": "unknown", "architecture": "unknown"}},
        {"digest": "not-a-digest", "platform": {"os": "linux", "architecture": "s390x"}}, "junk"]}
    # Then each image is found under its platform's name, and nothing else is
    assert listed_platforms(index) == {"linux/amd64": D1, "linux/arm64": D2, "linux/arm/v7": D3}


def test_the_pushed_index_lists_each_platform_in_canonical_order_as_a_manifest_list_of_docker_images():
    # Given two platforms' images as the engine pushed them
    images = {Platform.LINUX_ARM64: Descriptor(DOCKER_MANIFEST, D2, 528),
              Platform.LINUX_AMD64: Descriptor(DOCKER_MANIFEST, D1, 527)}
    # When the index is made
    media_type, body = index_for(images)
    index = json.loads(body)
    # Then it is a Docker manifest list naming both with their platforms, amd64 first, readable back
    assert media_type == index["mediaType"] == DOCKER_LIST
    assert [(e["digest"], e["size"], e["platform"]) for e in index["manifests"]] == [
        (D1, 527, {"architecture": "amd64", "os": "linux"}), (D2, 528, {"architecture": "arm64", "os": "linux"})]
    assert listed_platforms(index) == {"linux/amd64": D1, "linux/arm64": D2}


def test_oci_images_or_a_variant_make_an_oci_index_with_the_variant():
    media_type, body = index_for({Platform.LINUX_ARM_V7: Descriptor(OCI_MANIFEST, D3, 10)})
    assert media_type == OCI_INDEX and json.loads(body)["manifests"][0]["platform"]["variant"] == "v7"


@pytest.mark.parametrize("headers", [(None, D1, "10"), (DOCKER_MANIFEST, "sha256:x", "10"), (DOCKER_MANIFEST, D1, ""),
                                     (DOCKER_LIST, D1, "10")])
def test_a_descriptor_needs_an_image_type_a_digest_and_a_size(headers):
    with pytest.raises(UnreadableImage, match="without a usable media type"):
        descriptor(*headers, "the image x")
