"""Schedules of stored specs: cron (in a time zone) or a fixed interval, a rebuild policy, and self-disabling
after repeated failures (as EC2 Image Builder's auto-disable policy does). Kept in Redis; each due time is
claimed by exactly one scheduling pass."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from enum import Enum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import redis
from celery.schedules import crontab
from pydantic import BaseModel, field_validator, model_validator

from worker.errors import InvalidSpec, UnknownSpec

SCHEDULE_KEY = "imagebuilder:schedule:{name}"  # JSON Schedule
DUE_KEY = "imagebuilder:schedules:due"  # sorted set: spec name -> next due time (epoch s), enabled ones only
CRON_SEARCH_LIMIT_MIN = 366 * 24 * 60

# Claim a due schedule: move it to its next due time unless another pass already did (compare-and-set).
_CLAIM = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) == tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
  return 1
end
return 0
"""


class Policy(str, Enum):
    """What a schedule tick does."""

    ON_BASE_CHANGE = "on-base-change"  # HEAD the base manifest; rebuild only if its digest changed
    ALWAYS = "always"  # rebuild (forced) at every tick


class Schedule(BaseModel):
    """When a stored spec is checked, and what happened lately."""

    name: str
    cron: str | None = None
    every_s: int | None = None
    tz: str = "UTC"
    policy: Policy = Policy.ON_BASE_CHANGE
    enabled: bool = True
    disabled_reason: str | None = None
    consecutive_failures: int = 0
    last_checked: datetime | None = None
    last_fired: datetime | None = None
    next_due: datetime | None = None

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None:
            _crontab(value)
        return value

    @field_validator("tz")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone (e.g. UTC, Europe/Berlin)") from None
        return value

    @model_validator(mode="after")
    def _one_timing(self) -> Schedule:
        if (self.cron is None) == (self.every_s is None):
            raise ValueError("a schedule has either a cron expression or an interval in seconds")
        if self.every_s is not None and self.every_s < 1:
            raise ValueError("an interval is at least 1 second")
        return self

    def due_after(self, moment: datetime) -> datetime:
        """The first due time strictly after `moment`."""
        if self.every_s is not None:
            return moment + timedelta(seconds=self.every_s)
        return next_cron_time(self.cron, self.tz, moment)


def _crontab(expression: str) -> crontab:
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(f"{expression!r} needs 5 fields: minute hour day-of-month month day-of-week")
    minute, hour, day_of_month, month, day_of_week = fields
    try:
        return crontab(minute=minute, hour=hour, day_of_month=day_of_month, month_of_year=month,
                       day_of_week=day_of_week)
    except ValueError as e:
        raise ValueError(f"{expression!r} is not valid: {e}") from None


def next_cron_time(expression: str, tz: str, after: datetime) -> datetime:
    """The first minute after `after` that the cron expression matches, read on the wall clock of `tz`."""
    cron, zone = _crontab(expression), ZoneInfo(tz)
    moment = after.astimezone(timezone.utc).replace(second=0, microsecond=0) + timedelta(minutes=1)
    for _ in range(CRON_SEARCH_LIMIT_MIN):
        local = moment.astimezone(zone)
        if (local.minute in cron.minute and local.hour in cron.hour and local.day in cron.day_of_month
                and local.month in cron.month_of_year and local.isoweekday() % 7 in cron.day_of_week):
            return moment
        moment += timedelta(minutes=1)
    raise ValueError(f"{expression!r} never matches within a year")


class ScheduleStore:
    """Schedules in Redis, and the atomic claim of due ones."""

    def __init__(self, client: redis.Redis, *, disable_after: int):
        self._redis = client
        self._disable_after = disable_after
        self._claim = client.register_script(_CLAIM)

    def set(self, schedule: Schedule) -> Schedule:
        """Create or replace; the next due time is computed from now, and a set schedule is enabled."""
        schedule = schedule.model_copy(update={
            "enabled": True, "disabled_reason": None, "consecutive_failures": 0,
            "next_due": schedule.due_after(datetime.now(timezone.utc))})
        self._save(schedule)
        return schedule

    def get(self, name: str) -> Schedule:
        raw = self._redis.get(SCHEDULE_KEY.format(name=name))
        if not raw:
            raise UnknownSpec(f"stored spec {name!r} has no schedule")
        return Schedule.model_validate_json(raw)

    def find(self, name: str) -> Schedule | None:
        raw = self._redis.get(SCHEDULE_KEY.format(name=name))
        return Schedule.model_validate_json(raw) if raw else None

    def all(self) -> list[Schedule]:
        keys = sorted(self._redis.scan_iter(SCHEDULE_KEY.format(name="*")))
        return [Schedule.model_validate_json(raw) for raw in self._redis.mget(keys) if raw] if keys else []

    def remove(self, name: str) -> None:
        self._redis.delete(SCHEDULE_KEY.format(name=name))
        self._redis.zrem(DUE_KEY, name)

    def enable(self, name: str) -> Schedule:
        return self.set(self.get(name))

    def claim_due(self, now: float | None = None) -> list[tuple[Schedule, float]]:
        """The schedules due now, each with its due time, claimed by this pass alone."""
        now = time.time() if now is None else now
        claimed = []
        for name, due in self._redis.zrangebyscore(DUE_KEY, "-inf", now, withscores=True):
            schedule = self.find(name)
            if schedule is None or not schedule.enabled:
                self._redis.zrem(DUE_KEY, name)
                continue
            next_due = schedule.due_after(max(datetime.fromtimestamp(now, timezone.utc), schedule.next_due))
            if self._claim(keys=[DUE_KEY], args=[name, repr(due), next_due.timestamp()]):
                self._update(name, next_due=next_due)
                claimed.append((schedule, due))
        return claimed

    def checked(self, name: str, *, fired: bool) -> None:
        now = datetime.now(timezone.utc)
        self._update(name, last_checked=now, **({"last_fired": now} if fired else {}))

    def build_ended(self, name: str, succeeded: bool) -> None:
        """Count failures in a row of scheduled builds; after `disable_after` of them, disable the schedule."""
        schedule = self.find(name)
        if schedule is None:
            return
        failures = 0 if succeeded else schedule.consecutive_failures + 1
        if failures >= self._disable_after and schedule.enabled:
            self._update(name, consecutive_failures=failures, enabled=False,
                         disabled_reason=f"disabled after {failures} failed builds in a row; "
                                         f"`imagebuilder schedule enable {name}` resumes it")
            self._redis.zrem(DUE_KEY, name)
        else:
            self._update(name, consecutive_failures=failures)

    def _update(self, name: str, **fields) -> None:
        schedule = self.find(name)
        if schedule is not None:
            self._save(schedule.model_copy(update=fields))

    def _save(self, schedule: Schedule) -> None:
        pipe = self._redis.pipeline()
        pipe.set(SCHEDULE_KEY.format(name=schedule.name), schedule.model_dump_json())
        if schedule.enabled and schedule.next_due:
            pipe.zadd(DUE_KEY, {schedule.name: schedule.next_due.timestamp()})
        pipe.execute()


def parse_schedule(name: str, *, cron: str | None = None, every_s: int | None = None, tz: str = "UTC",
                   policy: str = Policy.ON_BASE_CHANGE.value) -> Schedule:
    """A Schedule from user input; InvalidSpec naming the field and the rule."""
    from pydantic import ValidationError

    from worker.spec import format_validation_error

    try:
        return Schedule(name=name, cron=cron, every_s=every_s, tz=tz, policy=policy)
    except ValidationError as e:
        raise InvalidSpec(format_validation_error(e).replace("invalid image spec", "invalid schedule")) from None
