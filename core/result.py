"""The build result: one model for the record in Redis, the Celery result, the CLI and the client."""

from __future__ import annotations

from datetime import datetime, timezone

from pydantic import BaseModel, ConfigDict

from core.phases import BuildPhase, BuildStep


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class SbomReport(BaseModel):
    """The SBOM attached to an image: its artifact manifest's digest (in the image's repository) and what it
    counted; or, where there is none, why."""

    model_config = ConfigDict(extra="ignore")

    digest: str | None = None
    packages: int = 0
    unreadable: int = 0  # package records that could not be read, left out (the SBOM's properties count them)
    error: str | None = None


class PackageVersion(BaseModel):
    """A package as an SBOM names it: its ecosystem (the package URL's type: deb, pypi, conda), name and version."""

    ecosystem: str
    name: str
    version: str


class PackageChange(BaseModel):
    """A package whose version changed between two images."""

    ecosystem: str
    name: str
    old: str
    new: str


class PackageChanges(BaseModel):
    """What a stored spec's build changed, by the SBOMs of its image and of the spec's previous successful build's
    (`since`, that build's id): the packages added, removed and changed."""

    since: str
    added: list[PackageVersion] = []
    removed: list[PackageVersion] = []
    changed: list[PackageChange] = []

    def summary(self, most_named: int = 3) -> str:
        """`openssl 3.0.11-1 → 3.0.13-1, +2, −0`: the first changes by name, then how many were added and removed."""
        named = [f"{c.name} {c.old} → {c.new}" for c in self.changed[:most_named]]
        more = [f"{len(self.changed) - most_named} more changed"] if len(self.changed) > most_named else []
        return ", ".join([*named, *more, f"+{len(self.added)}", f"−{len(self.removed)}"])


class PlatformPart(BaseModel):
    """One platform's image of a multi-platform build, as the worker building it reports it."""

    model_config = ConfigDict(extra="ignore")

    phase: BuildPhase = BuildPhase.PENDING
    step: BuildStep | None = None
    digest: str | None = None  # of its image, pushed under the target's tag with the platform after it
    worker: str | None = None
    error: str | None = None
    attempts: int = 0  # claims so far (a worker lost, or a transient failure, gives the part back)
    sbom: SbomReport | None = None  # this platform's image's


class BuildResult(BaseModel):
    """What is known about one build, from submission to its final phase."""

    model_config = ConfigDict(extra="ignore")

    id: str
    phase: BuildPhase = BuildPhase.PENDING
    step: BuildStep | None = None
    image: str
    digest: str | None = None
    base_digest: str | None = None
    skipped: bool = False
    worker: str | None = None
    error: str | None = None
    submitted_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    platforms: dict[str, PlatformPart] | None = None  # a multi-platform build's parts, by platform (`linux/arm64`)
    sbom: SbomReport | None = None  # a single-platform image's (a multi-platform build's are its parts')
    changes: PackageChanges | None = None  # since the stored spec's previous successful build

    @property
    def succeeded(self) -> bool:
        return self.phase is BuildPhase.SUCCEEDED

    def to_json(self) -> str:
        return self.model_dump_json()
