"""Schedules of stored specs as the contract describes them: cron (in a time zone) or a fixed interval, a rebuild
policy, and the state a scheduling pass keeps on them (their store is core.stores.schedules)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from enum import Enum
from zoneinfo import ZoneInfo

from celery.schedules import crontab
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from core.errors import InvalidSpec, NeverMatches
from core.spec import format_validation_error

CRON_HORIZON_YEARS = 8  # a leap day fits in any 8 years; an expression with no minute in them never matches
MAX_EVERY_S = 366 * 24 * 3600
MAX_CRON_CHARS = 200
MAX_ZONE_CHARS = 64


class Policy(str, Enum):
    """What a schedule tick does."""

    ON_BASE_CHANGE = "on-base-change"  # HEAD the base manifest; rebuild only if its digest changed
    ALWAYS = "always"  # rebuild (forced) at every tick


class Schedule(BaseModel):
    """When a stored spec is checked, and what happened lately."""

    name: str
    cron: str | None = Field(None, max_length=MAX_CRON_CHARS)
    every_s: int | None = None
    tz: str = Field("UTC", max_length=MAX_ZONE_CHARS)
    policy: Policy = Policy.ON_BASE_CHANGE
    enabled: bool = True
    disabled_reason: str | None = None
    consecutive_failures: int = 0
    last_error: str | None = None
    last_checked: datetime | None = None
    last_fired: datetime | None = None
    next_due: datetime | None = None

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None:
            _crontab(value)
        return value

    @field_validator("every_s")
    @classmethod
    def _interval(cls, value: int | None) -> int | None:
        if value is not None and not 1 <= value <= MAX_EVERY_S:
            raise ValueError(f"an interval is at least 1 second and at most {MAX_EVERY_S} seconds (a year)")
        return value

    @field_validator("tz")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except Exception:  # not found, not a key, or not a readable file: all mean the same to the user
            raise ValueError(f"{value!r} is not an IANA time zone (e.g. UTC, Europe/Berlin)") from None
        return value

    @model_validator(mode="after")
    def _one_timing(self) -> Schedule:
        if (self.cron is None) == (self.every_s is None):
            raise ValueError("a schedule has either a cron expression or an interval in seconds")
        return self

    def due_after(self, moment: datetime) -> datetime:
        """The first due time strictly after `moment`; NeverMatches for a cron with none in the horizon."""
        if self.every_s is not None:
            return moment + timedelta(seconds=self.every_s)
        return next_cron_time(self.cron, self.tz, moment)

    def upcoming(self, count: int, now: datetime) -> list[datetime]:
        """The next `count` due times after `now`, from the stored next one on (none while disabled)."""
        if not self.enabled:
            return []
        times = [self.next_due if self.next_due and self.next_due > now else self.due_after(now)]
        while len(times) < count:
            times.append(self.due_after(times[-1]))
        return times


def _crontab(expression: str) -> crontab:
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(f"{expression!r} needs 5 fields: minute hour day-of-month month day-of-week")
    minute, hour, day_of_month, month, day_of_week = fields
    try:
        return crontab(minute=minute, hour=hour, day_of_month=day_of_month, month_of_year=month,
                       day_of_week=day_of_week)
    except ValueError as e:
        if "never occurs" in str(e):  # Celery's own check: a day of month that no given month has
            raise NeverMatches(f"{expression!r} never matches: {str(e).removeprefix('Invalid crontab: ')}") from None
        raise ValueError(f"{expression!r} is not valid: {e}") from None


def next_cron_time(expression: str, tz: str, after: datetime) -> datetime:
    """The first minute after `after` that the cron expression matches, read on the wall clock of `tz`.

    As in Celery's crontab, a day matches when its day of month, month and day of week all do. Days are
    stepped through, not minutes, so an expression that never matches is found in about a millisecond."""
    cron, zone = _crontab(expression), ZoneInfo(tz)
    first_day = after.astimezone(zone).date()
    for day in (first_day + timedelta(days=n) for n in range(CRON_HORIZON_YEARS * 366)):
        if day.month in cron.month_of_year and day.day in cron.day_of_month and day.isoweekday() % 7 in \
                cron.day_of_week and (moment := _first_time_on(cron, day, zone, after)) is not None:
            return moment
    raise NeverMatches(f"{expression!r} never matches: no minute in the next {CRON_HORIZON_YEARS} years fits "
                       "all its fields")


def _first_time_on(cron: crontab, day: date, zone: ZoneInfo, after: datetime) -> datetime | None:
    """The earliest matching minute of `day` after `after`. On an ordinary day wall-clock order is time order,
    so the first one will do; on a day the clocks change, every candidate is compared."""
    candidates = (moment for hour in sorted(cron.hour) for minute in sorted(cron.minute)
                  for moment in _instants(day, hour, minute, zone) if moment > after)
    if _offset_changes_on(day, zone):
        return min(candidates, default=None)
    return next(candidates, None)


def _instants(day: date, hour: int, minute: int, zone: ZoneInfo) -> Iterator[datetime]:
    """The UTC instants a wall-clock time names: none in a gap (clocks forward), two in a fold (clocks back)."""
    seen = set()
    for fold in (0, 1):
        wall = datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone, fold=fold)
        instant = wall.astimezone(timezone.utc)
        if instant.astimezone(zone).replace(tzinfo=None) == wall.replace(tzinfo=None) and instant not in seen:
            seen.add(instant)
            yield instant


def _offset_changes_on(day: date, zone: ZoneInfo) -> bool:
    start = datetime(day.year, day.month, day.day, tzinfo=zone)
    return start.utcoffset() != (start + timedelta(days=1)).utcoffset()


def parse_schedule(name: str, *, cron: str | None = None, every_s: int | None = None, tz: str = "UTC",
                   policy: str = Policy.ON_BASE_CHANGE.value) -> Schedule:
    """A Schedule from user input; InvalidSpec naming the field and the rule (a cron that never fires too)."""
    try:
        schedule = Schedule(name=name, cron=cron, every_s=every_s, tz=tz, policy=policy)
    except ValidationError as e:
        raise InvalidSpec(format_validation_error(e).replace("invalid image spec", "invalid schedule")) from None
    try:
        schedule.due_after(datetime.now(timezone.utc))
    except NeverMatches as e:
        raise InvalidSpec(f"invalid schedule: cron: {e}") from None
    return schedule
