"""The SBOM step of a build: what the built image holds, read from the engine, made a CycloneDX document and
attached to the pushed image, as IMAGEBUILDER_SBOM says. `required`: a failure fails the build, and the image was
pushed under a staging tag only (the target is tagged after the SBOM is attached); `best-effort`: the build
succeeds and its record says why it has no SBOM; `off`: none is made."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

from config.settings import Settings
from core.errors import ImageBuilderError, RetryableError, SbomFailed
from core.reference import ImageReference, parse_reference
from core.registry.client import RegistryClient, RegistrySessions
from core.registry.credentials import push_credentials
from core.registry.referrers import attach_sbom, find_sbom, platform_image
from core.result import PackageChanges, SbomReport
from core.spec import ImageSpec
from core.stored import HistoryEntry
from worker.engine import Engine
from worker.sbom.changes import changes_between
from worker.sbom.cyclonedx import ImageSubject, sbom_json
from worker.sbom.imagefiles import ImageFiles
from worker.sbom.inventory import READS_AT_ONCE, read_inventory
from worker.sbom.packages import requested_names

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SbomJob:
    """One image to describe: the spec it was built from, its name on the engine, and where it was pushed."""

    spec: ImageSpec
    local_image: str
    pushed: ImageReference  # repository and tag
    digest: str  # the pushed manifest's
    base_digest: str | None


@dataclass(frozen=True)
class SbomMade:
    """What the step made: its report for the record, and the document it attached (None if it attached none)."""

    report: SbomReport
    document: bytes | None = None


class SbomStep:
    """Makes and attaches images' SBOMs under one policy, with the push credentials."""

    def __init__(self, settings: Settings, registries: RegistrySessions):
        self.policy = settings.sbom
        self._registries = registries
        self._credentials = push_credentials(settings)

    @property
    def required(self) -> bool:
        return self.policy == "required"

    def run(self, engine: Engine, job: SbomJob) -> SbomMade | None:
        """The SBOM attached, or (best-effort) why it is not; None when off. Required: SbomFailed, or the
        transient error as it is (the build is tried again)."""
        if self.policy == "off":
            return None
        try:
            return self._attach(engine, job)
        except ImageBuilderError as e:
            if not self.required:
                return SbomMade(self._none(job, e.message))
            if isinstance(e, RetryableError):
                raise
            raise SbomFailed(f"the SBOM could not be made or attached: {e.message}") from None
        except Exception as e:  # a bug here must not cost an image that was built and pushed
            if self.required:
                raise
            logger.exception("the SBOM of %s failed", job.pushed)
            return SbomMade(self._none(job, f"internal error: {type(e).__name__} (the worker's log has the details)"))

    def changes(self, target: ImageReference, digest: str, document: bytes | None,
                last: HistoryEntry | None) -> PackageChanges | None:
        """What the image at `digest` changed since the stored spec's previous success (`last`), by their SBOMs
        (a multi-platform image's first platform's, by name); None where either has none. Never raises: the
        image is built and pushed, and this only describes it."""
        if self.policy == "off" or last is None or not last.digest:
            return None
        registry = self._registries.client(target.registry, self._credentials)
        try:
            before = _sbom_of(registry, target, last.digest)
            after = document or _sbom_of(registry, target, digest)
            return changes_between(before, after, last.id) if before and after else None
        except (ImageBuilderError, ValueError) as e:
            logger.info("what %s changed is unknown: %s", target, getattr(e, "message", type(e).__name__))
            return None

    def _attach(self, engine: Engine, job: SbomJob) -> SbomMade:
        with ImageFiles.of(engine.api, job.local_image, lanes=READS_AT_ONCE) as files:
            inventory = read_inventory(files)
        registry = self._registries.client(job.pushed.registry, self._credentials)
        subject = registry.image_descriptor(dataclasses.replace(job.pushed, tag=None, digest=job.digest))
        packages = job.spec.packages
        document = sbom_json(inventory, ImageSubject(job.pushed, job.digest, parse_reference(job.spec.base_image),
                                                     job.base_digest),
                             requested_names(packages.apt, packages.pip, packages.conda))
        attached = attach_sbom(registry, job.pushed, subject, document.encode())
        return SbomMade(SbomReport(digest=attached, packages=len(inventory.packages),
                                   unreadable=sum(inventory.skipped.values())), document.encode())

    @staticmethod
    def _none(job: SbomJob, why: str) -> SbomReport:
        logger.info("no SBOM for %s: %s", job.pushed, why)
        return SbomReport(error=f"no SBOM: {why}")

    def tag_target(self, staged: ImageReference, digest: str, target: ImageReference) -> str:
        """Tag the target with the staged image, once its SBOM is attached (required): the digest."""
        registry = self._registries.client(target.registry, self._credentials)
        return registry.tag_manifest(dataclasses.replace(staged, tag=None, digest=digest), target)


def describe(report: SbomReport) -> str:
    """The log's line for an SBOM."""
    if report.digest is None:
        return report.error or "no SBOM"
    unreadable = f" ({report.unreadable} unreadable records left out)" if report.unreadable else ""
    return f"SBOM: {report.packages} packages{unreadable}, attached as {report.digest}"


def _sbom_of(registry: RegistryClient, image: ImageReference, digest: str) -> bytes | None:
    return find_sbom(registry, dataclasses.replace(image, digest=None),
                     platform_image(registry, image, digest, None))
