"""Builds' SBOMs through the client: the CycloneDX document attached to a build's image, read from its registry
(a skipped build's is the existing image's)."""

from __future__ import annotations

from core.errors import NoSbom
from core.reference import parse_reference
from core.registry.client import ThreadRegistrySessions
from core.registry.credentials import push_credentials
from core.registry.referrers import find_sbom, platform_image
from core.result import BuildResult
from producer.client.wiring import ClientWiring, translated


@translated
class Sboms:
    """The SBOMs of builds' images, with the push credentials (the images are where builds pushed them)."""

    def __init__(self, wiring: ClientWiring):
        self._builds = wiring.stores.builds
        self._credentials = push_credentials(wiring.settings)
        self._registries = ThreadRegistrySessions(wiring.settings)  # the API serves from a thread pool

    def of_build(self, build_id: str, platform: str | None = None) -> bytes:
        """The CycloneDX JSON of the build's image (of `platform`'s image for a multi-platform build; without it,
        the first platform by name). NoSbom if the build has no image or the image no SBOM."""
        record = self._builds.get(build_id)
        if not record.succeeded or not record.digest:
            raise NoSbom(f"build {build_id} has no image: it is {record.phase.value}")
        image = parse_reference(record.image)
        registry = self._registries.get().client(image.registry, self._credentials)
        subject = platform_image(registry, image, record.digest, platform)
        found = find_sbom(registry, image, subject)
        if found is None:
            raise NoSbom(f"the image of build {build_id} ({image.name}@{subject}) has no SBOM{_why(record)}")
        return found


def _why(record: BuildResult) -> str:
    return f": {record.sbom.error}" if record.sbom and record.sbom.error else " attached"
