"""Stored specs and their history as the contract describes them (their store is core.stores.specs): the spec as
applied, each of its builds with why it ran."""

from __future__ import annotations

from datetime import datetime
from enum import Enum

from pydantic import BaseModel, ConfigDict

from core.phases import BuildPhase
from core.result import BuildResult, PackageChanges
from core.spec import ImageSpec


class Trigger(str, Enum):
    """Why a stored spec was built."""

    MANUAL = "manual"  # someone asked for it (`imagebuilder build NAME`, POST /specs/{name}/builds)
    SCHEDULE = "schedule"  # a schedule tick with the `always` policy
    BASE_CHANGED = "base-changed"  # a schedule tick found a new digest behind the base image's tag
    SPEC_CHANGED = "spec-changed"  # the spec was created or edited, which gives it a new tag
    BASE_PUSHED = "base-pushed"  # a registry said the base was pushed, and its digest is new
    BASE_REBUILT = "base-rebuilt"  # the stored spec that builds the base succeeded with a new digest


SCHEDULED_TRIGGERS = frozenset({Trigger.SCHEDULE, Trigger.BASE_CHANGED})
# The same test for Lua scripts that read a trigger out of a stored history mark.
LUA_IS_SCHEDULED = (
    "local function is_scheduled(trigger)\n  return "
    + " or ".join(f"trigger == '{trigger.value}'" for trigger in sorted(SCHEDULED_TRIGGERS)) + "\nend\n"
)


class StoredSpec(BaseModel):
    """A spec as stored and built, with the tag it builds to and when it was last applied. A spec that names no
    platforms but is built on the current image of a stored spec that does takes that spec's platforms: `spec`
    holds them, and `platforms_from` names the spec they came from."""

    spec: ImageSpec
    tag: str
    updated_at: datetime
    platforms_from: str | None = None

    @property
    def written(self) -> ImageSpec:
        """The spec as it was applied (without the platforms it inherits)."""
        return self.spec.model_copy(update={"platforms": None}) if self.platforms_from else self.spec


class HistoryMark(BaseModel):
    """What a history keeps of each build beside its record (which holds the rest, and is kept as long as the
    history keeps the build): which stored spec, its tag then, and why it ran."""

    model_config = ConfigDict(extra="ignore")

    id: str
    name: str
    tag: str
    trigger: Trigger


class HistoryEntry(BaseModel):
    """One build of a stored spec: the build's result plus why it ran."""

    id: str
    name: str
    tag: str
    trigger: Trigger
    phase: BuildPhase
    submitted_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    digest: str | None = None
    base_digest: str | None = None
    error: str | None = None
    changes: PackageChanges | None = None  # what it changed since the spec's previous success, by their SBOMs

    @classmethod
    def of(cls, mark: HistoryMark, result: BuildResult) -> HistoryEntry:
        return cls(name=mark.name, tag=mark.tag, trigger=mark.trigger, **build_fields(result))


def build_fields(result: BuildResult, mode: str = "python") -> dict:
    """The fields a history entry takes from its build's result."""
    return result.model_dump(mode=mode, include=set(HistoryEntry.model_fields) - {"name", "tag", "trigger"})
