"""How the console shows things: ages and durations, a schedule in words, log lines without ANSI codes, an SBOM's
packages as table rows, and the geometry of the builds-by-hour chart. Pure functions, most registered as template
filters."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from core.phases import REPORTED_STEPS, BuildPhase
from core.sbom import REQUESTED_PROPERTY, library_components
from core.schedule import Schedule
from producer.overview import HourOfBuilds

# CSI sequences (colours, cursor moves) and OSC ones (titles, links), as `docker build` output carries them
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")
PROGRESS = (BuildPhase.PENDING.value, *(step.value for step in REPORTED_STEPS))
CHART_PHASES = (BuildPhase.SUCCEEDED.value, BuildPhase.FAILED.value, BuildPhase.CANCELLED.value)
_UNITS = (("d", 86400), ("h", 3600), ("min", 60), ("s", 1))


def without_ansi(line: str) -> str:
    return _ANSI.sub("", line)


def span(seconds: float | None) -> str:
    """A duration in its two largest units: '3 min 12 s', '2 h 5 min'."""
    if seconds is None:
        return ""
    left, parts = int(round(seconds)), []
    for unit, size in _UNITS:
        if left >= size or (unit == "s" and not parts):
            parts.append(f"{left // size} {unit}")
            left %= size
    return " ".join(parts[:2])


def age(moment: datetime | None, now: datetime | None = None) -> str:
    """'5 min ago'; 'in 3 h' for a moment still to come."""
    if moment is None:
        return ""
    seconds = ((now or datetime.now(timezone.utc)) - moment).total_seconds()
    return f"{span(seconds)} ago" if seconds >= 0 else f"in {span(-seconds)}"


def in_zone(moment: datetime, tz: str) -> str:
    """The moment as a clock in `tz` shows it: '2026-11-29 03:00 CET'."""
    return moment.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M %Z")


def took(started: datetime | None, finished: datetime | None) -> str:
    return span((finished - started).total_seconds()) if started and finished else ""


def timing(schedule: Schedule) -> str:
    """The schedule in words: 'cron 0 3 * * * (Europe/Berlin), on base change' or 'every 1 h, always'."""
    when = f"cron {schedule.cron} ({schedule.tz})" if schedule.cron else f"every {span(schedule.every_s)}"
    return f"{when}, {schedule.policy.value.replace('-', ' ')}"


def reached(phase: str, step: str | None, stage: str) -> str:
    """Where a progress stage stands for a build: 'done', 'current', 'todo', or the phase it ended in there."""
    if phase == BuildPhase.SUCCEEDED.value:
        return "done"
    at = PROGRESS.index(step) if phase != BuildPhase.PENDING.value and step in PROGRESS else 0
    index = PROGRESS.index(stage)
    if index != at:
        return "done" if index < at else "todo"
    return "current" if phase in (BuildPhase.PENDING.value, BuildPhase.RUNNING.value) else phase.lower()


@dataclass(frozen=True)
class Bar:
    """One phase's part of one hour's bar, in chart coordinates."""

    x: float
    y: float
    width: float
    height: float
    phase: str
    title: str


def chart_bars(hours: list[HourOfBuilds], width: float, height: float) -> list[Bar]:
    """Stacked bars, one per hour, scaled so the busiest hour fills `height`."""
    busiest = max((hour.total for hour in hours), default=0) or 1
    slot = width / max(len(hours), 1)
    bars = []
    for index, hour in enumerate(hours):
        top = height
        for phase in CHART_PHASES:
            count = hour.phases.get(phase, 0)
            if count:
                size = height * count / busiest
                top -= size
                label = f"{hour.start:%H}:00 UTC: {count} {phase.lower()}"
                bars.append(Bar(index * slot + 1, top, slot - 2, size, phase.lower(), label))
    return bars


@dataclass(frozen=True)
class PackageRow:
    """One package of an SBOM, as its table shows it."""

    name: str
    ecosystem: str  # the package URL's type: deb, pypi, conda
    version: str
    requested: bool


@dataclass(frozen=True)
class PackageTable:
    """An SBOM's packages whose names contain the filter, in name order, and how many it lists in all; or why it
    could not be read."""

    rows: list[PackageRow]
    total: int
    problem: str | None = None


def package_table(document: bytes, contains: str) -> PackageTable:
    try:
        components = library_components(document)
    except ValueError:
        return PackageTable([], 0, problem="the SBOM in the registry is not JSON")
    rows = sorted((_row(c) for c in components), key=lambda row: (row.name, row.ecosystem))
    return PackageTable([row for row in rows if contains.lower() in row.name.lower()], len(rows))


def _row(component: dict) -> PackageRow:
    purl = str(component.get("purl") or "")
    ecosystem = purl.removeprefix("pkg:").split("/", 1)[0] if purl.startswith("pkg:") else "?"
    requested = {"name": REQUESTED_PROPERTY, "value": "true"} in (component.get("properties") or [])
    return PackageRow(str(component.get("name") or "?"), ecosystem, str(component.get("version") or ""), requested)
