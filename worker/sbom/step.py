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
from core.result import SbomReport
from core.spec import ImageSpec
from worker.credentials import push_credentials
from worker.engine import Engine
from worker.registry import RegistrySessions
from worker.sbom.attach import attach_sbom
from worker.sbom.cyclonedx import ImageSubject, sbom_json
from worker.sbom.imagefiles import ImageFiles
from worker.sbom.inventory import read_inventory
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


class SbomStep:
    """Makes and attaches images' SBOMs under one policy, with the push credentials."""

    def __init__(self, settings: Settings, registries: RegistrySessions):
        self.policy = settings.sbom
        self._registries = registries
        self._credentials = push_credentials(settings)

    @property
    def required(self) -> bool:
        return self.policy == "required"

    def run(self, engine: Engine, job: SbomJob) -> SbomReport | None:
        """The SBOM attached, or (best-effort) why it is not; None when off. Required: SbomFailed, or the
        transient error as it is (the build is tried again)."""
        if self.policy == "off":
            return None
        try:
            return self._attach(engine, job)
        except ImageBuilderError as e:
            if not self.required:
                return self._none(job, e.message)
            if isinstance(e, RetryableError):
                raise
            raise SbomFailed(f"the SBOM could not be made or attached: {e.message}") from None
        except Exception as e:  # a bug here must not cost an image that was built and pushed
            if self.required:
                raise
            logger.exception("the SBOM of %s failed", job.pushed)
            return self._none(job, f"internal error: {type(e).__name__} (the worker's log has the details)")

    def _attach(self, engine: Engine, job: SbomJob) -> SbomReport:
        with ImageFiles.of(engine.api, job.local_image) as files:
            inventory = read_inventory(files)
        registry = self._registries.client(job.pushed.registry, self._credentials)
        subject = registry.image_descriptor(dataclasses.replace(job.pushed, tag=None, digest=job.digest))
        packages = job.spec.packages
        document = sbom_json(inventory, ImageSubject(job.pushed, job.digest, parse_reference(job.spec.base_image),
                                                     job.base_digest),
                             requested_names(packages.apt, packages.pip, packages.conda))
        digest = attach_sbom(registry, job.pushed, subject, document.encode())
        return SbomReport(digest=digest, packages=len(inventory.packages), unreadable=sum(inventory.skipped.values()))

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
