"""An inventory as a CycloneDX 1.6 JSON document, made with cyclonedx-python-lib: the image as the BOM's subject
(its base as its ancestor), each package a `library` component with its package URL, requested ones marked."""

from __future__ import annotations

from dataclasses import dataclass

from cyclonedx.model import Property
from cyclonedx.model.bom import Bom, BomMetaData
from cyclonedx.model.component import Component, ComponentType, Pedigree
from cyclonedx.output.json import JsonV1Dot6
from packageurl import PackageURL

from core.reference import ImageReference
from core.sbom import BASE_IMAGE_PROPERTY, REQUESTED_PROPERTY, SKIPPED_PROPERTY
from worker.sbom.packages import Ecosystem, Inventory, Package


@dataclass(frozen=True)
class ImageSubject:
    """The image an SBOM describes (by the digest it was pushed with), and the base it was built on."""

    image: ImageReference
    digest: str
    base: ImageReference
    base_digest: str | None


def sbom_json(inventory: Inventory, subject: ImageSubject, requested: set[tuple[Ecosystem, str]]) -> str:
    """The CycloneDX 1.6 JSON of `inventory`, describing `subject`."""
    image = _image_component(subject.image, subject.digest)
    image.pedigree = Pedigree(ancestors=[_image_component(subject.base, subject.base_digest)])
    components = [_library(package, (package.ecosystem, package.name) in requested)
                  for package in inventory.packages]
    if inventory.distro.id:
        components.append(Component(type=ComponentType.OPERATING_SYSTEM, name=inventory.distro.id,
                                    version=inventory.distro.version_id or None,
                                    description=inventory.distro.pretty_name or None, bom_ref="os"))
    bom = Bom(components=components, metadata=BomMetaData(component=image, properties=_properties(inventory,
                                                                                                   subject)))
    bom.register_dependency(image, components)
    return JsonV1Dot6(bom).output_as_string(indent=None)


def _image_component(reference: ImageReference, digest: str | None) -> Component:
    qualifiers = {"repository_url": reference.name, **({"tag": reference.tag} if reference.tag else {})}
    purl = PackageURL(type="oci", name=reference.name.rsplit("/", 1)[-1], version=digest, qualifiers=qualifiers)
    return Component(type=ComponentType.CONTAINER, name=reference.name, version=digest or reference.tag,
                     purl=purl, bom_ref=str(reference) if digest is None else f"{reference.name}@{digest}")


def _library(package: Package, requested: bool) -> Component:
    properties = [Property(name=REQUESTED_PROPERTY, value="true")] if requested else []
    return Component(type=ComponentType.LIBRARY, name=package.name, version=package.version,
                     purl=PackageURL.from_string(package.purl), bom_ref=package.purl, properties=properties)


def _properties(inventory: Inventory, subject: ImageSubject) -> list[Property]:
    base = f"{subject.base}@{subject.base_digest}" if subject.base_digest else str(subject.base)
    return [Property(name=BASE_IMAGE_PROPERTY, value=base)] + [
        Property(name=SKIPPED_PROPERTY.format(source=source), value=str(count))
        for source, count in sorted(inventory.skipped.items())]
