"""Schedules of stored specs: cron (in a time zone) or a fixed interval, a rebuild policy, and self-disabling
after repeated failures (as EC2 Image Builder's auto-disable policy does). Kept in Redis; each due time is
claimed by exactly one scheduling pass."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from enum import Enum
from zoneinfo import ZoneInfo

import redis
from celery.schedules import crontab
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from worker.errors import InvalidSpec, UnknownSpec

SCHEDULE_KEY = "imagebuilder:schedule:{name}"  # JSON Schedule
DUE_KEY = "imagebuilder:schedules:due"  # sorted set: spec name -> next due time (epoch s), enabled ones only
CRON_HORIZON_YEARS = 8  # a leap day fits in any 8 years; an expression with no minute in them never matches
MAX_EVERY_S = 366 * 24 * 3600
MAX_CRON_CHARS = 200
MAX_ZONE_CHARS = 64

# Every change to a stored schedule is one of these scripts (or, for a whole new schedule, one MULTI), so that no
# read-modify-write can undo a change made meanwhile: a build's end patching its schedule while a scheduling pass
# claims it must not write back a stale due time and make it fire twice.
_LUA_PATCH = """
local function patch(key, fields)
  local raw = redis.call('GET', key)
  if not raw then return 0 end
  local schedule = cjson.decode(raw)
  for field, value in pairs(cjson.decode(fields)) do schedule[field] = value end
  redis.call('SET', key, cjson.encode(schedule))
  return 1
end
"""
# Patch fields (ARGV[2], JSON) of schedule KEYS[1] named ARGV[1]; then, if it exists, leave its due time (ARGV[3]
# empty), drop it from the due set ('drop') or set it (a score).
_CHANGE = _LUA_PATCH + """
if patch(KEYS[1], ARGV[2]) == 0 then return 0 end
if ARGV[3] == 'drop' then redis.call('ZREM', KEYS[2], ARGV[1])
elseif ARGV[3] ~= '' then redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1]) end
return 1
"""
# Count one more failure in a row (its error ARGV[2]); at ARGV[3] of them, disable the schedule, saying why
# (ARGV[4] .. count .. ARGV[5]), and drop it from the due set. Returns the count (0 if the schedule is gone).
_FAIL = """
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
local schedule = cjson.decode(raw)
local failures = (tonumber(schedule['consecutive_failures']) or 0) + 1
schedule['consecutive_failures'] = failures
schedule['last_error'] = ARGV[2]
if failures >= tonumber(ARGV[3]) and schedule['enabled'] == true then
  schedule['enabled'] = false
  schedule['disabled_reason'] = ARGV[4] .. failures .. ARGV[5]
  redis.call('ZREM', KEYS[2], ARGV[1])
end
redis.call('SET', KEYS[1], cjson.encode(schedule))
return failures
"""
# Claim a due schedule: move it to its next due time unless another pass already did (compare-and-set), and
# store that time in the schedule.
_CLAIM = _LUA_PATCH + """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) ~= tonumber(ARGV[2]) then return 0 end
if patch(KEYS[2], ARGV[4]) == 0 then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return 1
"""
# Drop a due entry whose schedule is gone or disabled, unless it was enabled again meanwhile.
_DROP_STALE = """
local raw = redis.call('GET', KEYS[2])
if raw and cjson.decode(raw)['enabled'] == true then return 0 end
return redis.call('ZREM', KEYS[1], ARGV[1])
"""


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


class NeverMatches(ValueError):
    """A cron expression with no minute in the next CRON_HORIZON_YEARS that fits all its fields."""


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


class ScheduleStore:
    """Schedules in Redis, and the atomic claim of due ones."""

    def __init__(self, client: redis.Redis, *, disable_after: int):
        self._redis = client
        self._disable_after = disable_after
        self._scripts = {name: client.register_script(text) for name, text in (
            ("change", _CHANGE), ("fail", _FAIL), ("claim", _CLAIM), ("drop_stale", _DROP_STALE))}

    def set(self, schedule: Schedule) -> Schedule:
        """Create or replace; the next due time is computed from now, and a set schedule is enabled."""
        schedule = schedule.model_copy(update={
            "enabled": True, "disabled_reason": None, "consecutive_failures": 0, "last_error": None,
            "next_due": schedule.due_after(datetime.now(timezone.utc))})
        pipe = self._redis.pipeline()  # one MULTI: the record and its due time together
        pipe.set(SCHEDULE_KEY.format(name=schedule.name), schedule.model_dump_json())
        pipe.zadd(DUE_KEY, {schedule.name: schedule.next_due.timestamp()})
        pipe.execute()
        return schedule

    def get(self, name: str) -> Schedule:
        schedule = self.find(name)
        if schedule is None:
            raise UnknownSpec(f"stored spec {name!r} has no schedule")
        return schedule

    def find(self, name: str) -> Schedule | None:
        raw = self._redis.get(SCHEDULE_KEY.format(name=name))
        return Schedule.model_validate_json(raw) if raw else None

    def of(self, names: list[str]) -> dict[str, Schedule]:
        """The schedules of those of the named specs that have one, by name."""
        raws = self._redis.mget([SCHEDULE_KEY.format(name=n) for n in names]) if names else []
        return {n: Schedule.model_validate_json(raw) for n, raw in zip(names, raws) if raw}

    def all(self) -> list[Schedule]:
        keys = sorted(self._redis.scan_iter(SCHEDULE_KEY.format(name="*")))
        return [Schedule.model_validate_json(raw) for raw in self._redis.mget(keys) if raw] if keys else []

    def remove(self, name: str) -> None:
        pipe = self._redis.pipeline()
        pipe.delete(SCHEDULE_KEY.format(name=name))
        pipe.zrem(DUE_KEY, name)
        pipe.execute()

    def enable(self, name: str) -> Schedule:
        """Fire again from the next due time after now, with the failure count reset."""
        next_due = self.get(name).due_after(datetime.now(timezone.utc))
        self._change(name, {"enabled": True, "disabled_reason": None, "consecutive_failures": 0,
                            "last_error": None, "next_due": next_due.isoformat()}, due=str(next_due.timestamp()))
        return self.get(name)

    def disable(self, name: str, reason: str) -> Schedule:
        """Stop firing until enabled again, keeping the timing and saying why."""
        self.get(name)
        self._disable(name, reason)
        return self.get(name)

    def due(self, now: float | None = None) -> list[tuple[str, float]]:
        """The names of the schedules due at `now` (default: now), each with its due time; none claimed yet."""
        return self._redis.zrangebyscore(DUE_KEY, "-inf", time.time() if now is None else now, withscores=True)

    def claim(self, due: list[tuple[str, float]], now: float | None = None) -> list[Schedule]:
        """Move each due schedule to its next due time, for this pass alone: the ones this pass claimed (not
        those another pass claimed, nor gone or disabled ones). A cron that will never match again disables its
        schedule, saying so. Three round trips, however many are due."""
        now_at = datetime.fromtimestamp(time.time() if now is None else now, timezone.utc)
        raws = self._redis.mget([SCHEDULE_KEY.format(name=name) for name, _ in due]) if due else []
        stale, moves = [], []
        for (name, due_at), raw in zip(due, raws):
            schedule = Schedule.model_validate_json(raw) if raw else None
            if schedule is None or not schedule.enabled:
                stale.append(name)
            elif (next_due := self._next_due(schedule, now_at)) is not None:
                moves.append((schedule.model_copy(update={"next_due": next_due}), due_at))
        pipe = self._redis.pipeline(transaction=False)
        for name in stale:
            self._scripts["drop_stale"](keys=[DUE_KEY, SCHEDULE_KEY.format(name=name)], args=[name], client=pipe)
        for schedule, due_at in moves:
            fields = {"next_due": schedule.next_due.isoformat()}
            self._scripts["claim"](keys=[DUE_KEY, SCHEDULE_KEY.format(name=schedule.name)],
                                   args=[schedule.name, repr(due_at), schedule.next_due.timestamp(),
                                         json.dumps(fields)], client=pipe)
        claimed = pipe.execute()[len(stale):]
        return [schedule for (schedule, _), won in zip(moves, claimed) if won]

    def _next_due(self, schedule: Schedule, now_at: datetime) -> datetime | None:
        try:
            return schedule.due_after(max(now_at, schedule.next_due or now_at))
        except NeverMatches as e:
            self._disable(schedule.name, f"disabled: {e}")
            return None

    def checked(self, ticks: list[tuple[str, bool]]) -> None:
        """Ticks checked these bases (name, whether a build was fired): an unchanged base is a success of its
        own, a changed one waits for its build. One round trip."""
        now = datetime.now(timezone.utc).isoformat()
        pipe = self._redis.pipeline(transaction=False)
        for name, fired in ticks:
            fields = {"last_fired": now} if fired else {"consecutive_failures": 0, "last_error": None}
            self._change(name, {"last_checked": now, **fields}, pipe=pipe)
        pipe.execute()

    def check_failed(self, name: str, error: str) -> None:
        """A tick could not check the base; it counts toward disabling the schedule like a failed build."""
        self._failed(name, f"checking the base failed: {error}", "failed checks")

    def build_ended(self, name: str, *, succeeded: bool, error: str | None = None) -> None:
        """Count failures in a row of scheduled builds; after `disable_after` of them, disable the schedule."""
        if succeeded:
            self._change(name, {"consecutive_failures": 0, "last_error": None})
        else:
            self._failed(name, error or "the build failed", "failed builds")

    def _failed(self, name: str, error: str, what: str) -> None:
        self._scripts["fail"](keys=[SCHEDULE_KEY.format(name=name), DUE_KEY], args=[
            name, error, self._disable_after, "disabled after ",
            f" {what} in a row; `imagebuilder schedule enable {name}` resumes it"])

    def _disable(self, name: str, reason: str) -> None:
        self._change(name, {"enabled": False, "disabled_reason": reason}, due="drop")

    def _change(self, name: str, fields: dict, *, due: str = "", pipe: redis.client.Pipeline | None = None) -> None:
        """Patch `fields` of the schedule (if it exists) and move its due time as `due` says, in one step."""
        self._scripts["change"](keys=[SCHEDULE_KEY.format(name=name), DUE_KEY], args=[name, json.dumps(fields), due],
                                client=self._redis if pipe is None else pipe)


def parse_schedule(name: str, *, cron: str | None = None, every_s: int | None = None, tz: str = "UTC",
                   policy: str = Policy.ON_BASE_CHANGE.value) -> Schedule:
    """A Schedule from user input; InvalidSpec naming the field and the rule (a cron that never fires too)."""
    from worker.spec import format_validation_error

    try:
        schedule = Schedule(name=name, cron=cron, every_s=every_s, tz=tz, policy=policy)
    except ValidationError as e:
        raise InvalidSpec(format_validation_error(e).replace("invalid image spec", "invalid schedule")) from None
    try:
        schedule.due_after(datetime.now(timezone.utc))
    except NeverMatches as e:
        raise InvalidSpec(f"invalid schedule: cron: {e}") from None
    return schedule
