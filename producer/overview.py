"""Read models that join what the stores keep apart (a spec, its newest build, its schedule; a build and the spec it
was for; workers and figures), for the API's listings and the console's pages."""

from __future__ import annotations

import statistics
from datetime import datetime

from pydantic import BaseModel

from core.result import BuildResult
from core.schedule import Schedule
from core.stored import HistoryEntry, StoredSpec, Trigger

MAX_PAGE_ITEMS = 1000


class SpecListing(StoredSpec):
    """A stored spec as listed: the spec, its newest build and its schedule, if any."""

    last_build: HistoryEntry | None = None
    schedule: Schedule | None = None


class SpecDetail(StoredSpec):
    """A stored spec with its place in image chains: the stored spec it is built on, and those built on it."""

    upstream: str | None = None
    downstream: list[str] = []


class SpecPage(BaseModel):
    """One page of the stored specs whose name contains a filter, and how many match in all."""

    items: list[SpecListing]
    total: int
    offset: int
    limit: int

    @property
    def next_offset(self) -> int | None:
        return self.offset + self.limit if self.offset + self.limit < self.total else None

    @property
    def previous_offset(self) -> int | None:
        return max(self.offset - self.limit, 0) if self.offset > 0 else None


class BuildListing(BaseModel):
    """A recent build, with the stored spec it built (None for an ad-hoc build) and why it ran."""

    result: BuildResult
    spec_name: str | None = None
    trigger: Trigger | None = None
    rebuildable: bool = False


class WorkerListing(BaseModel):
    """A worker seen lately, and the builds it runs now."""

    name: str
    last_seen: datetime
    current_builds: list[str] = []


class HourOfBuilds(BaseModel):
    """Builds that ended within one hour, by final phase."""

    start: datetime
    phases: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.phases.values())


class Operations(BaseModel):
    """The service now: workers, queue, builds in progress, the last 24 hours' builds and how long they took."""

    workers: list[WorkerListing]
    queue_depth: int
    running: int
    hours: list[HourOfBuilds]
    p50_duration_s: float | None
    p95_duration_s: float | None

    @property
    def phase_totals(self) -> dict[str, int]:
        """Builds ended in the hours shown, by final phase."""
        totals: dict[str, int] = {}
        for hour in self.hours:
            for phase, count in hour.phases.items():
                totals[phase] = totals.get(phase, 0) + count
        return totals


def percentile(values: list[float], share: int) -> float | None:
    """The `share`th percentile (inclusive method); None for no values."""
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[share - 1]
