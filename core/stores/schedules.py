"""Schedules in Redis, with self-disabling after repeated failures (as EC2 Image Builder's auto-disable policy
does); each due time is claimed by exactly one scheduling pass."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import redis

from core.errors import NeverMatches, UnknownSpec
from core.schedule import Schedule
from core.stores.connection import Replicas

SCHEDULE_KEY = "imagebuilder:schedule:{name}"  # JSON Schedule
DUE_KEY = "imagebuilder:schedules:due"  # sorted set: spec name -> next due time (epoch s), enabled ones only

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
# Count one more failure in a row of the schedule at `key` (its error given); at `disable_after` of them, disable
# it, saying why, and drop it from the due set. Returns the count (0 if the schedule is gone).
_LUA_FAILED = f"""
local function failed(key, name, error, disable_after, what)
  local raw = redis.call('GET', key)
  if not raw then return 0 end
  local schedule = cjson.decode(raw)
  local failures = (tonumber(schedule['consecutive_failures']) or 0) + 1
  schedule['consecutive_failures'] = failures
  schedule['last_error'] = error
  if failures >= tonumber(disable_after) and schedule['enabled'] == true then
    schedule['enabled'] = false
    schedule['disabled_reason'] = 'disabled after ' .. failures .. ' ' .. what .. ' in a row; ' ..
      '`imagebuilder schedule enable ' .. name .. '` resumes it'
    redis.call('ZREM', '{DUE_KEY}', name)
  end
  redis.call('SET', key, cjson.encode(schedule))
  return failures
end
"""
_FAIL = _LUA_FAILED + "return failed(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4])"
# A scheduled build's end, for the script that ends builds (core.stores.ending), so that the schedule says how its
# build ended as soon as anyone can see that it has: a success clears the failures in a row, anything else counts
# one more.
LUA_SCHEDULED_BUILD_ENDED = _LUA_PATCH + _LUA_FAILED + f"""
local function scheduled_build_ended(name, succeeded, error, disable_after)
  local key = '{SCHEDULE_KEY.format(name="")}' .. name
  if succeeded then return patch(key, '{{"consecutive_failures": 0, "last_error": null}}') end
  return failed(key, name, error, disable_after, 'failed builds')
end
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


class ScheduleStore:
    """Schedules in Redis, and the atomic claim of due ones."""

    def __init__(self, client: redis.Redis, replicas: Replicas, *, disable_after: int):
        self._redis = client
        self._replicas = replicas
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
        claimed = [schedule for (schedule, _), won in zip(moves, pipe.execute()[len(stale):]) if won]
        if claimed:  # claimed all the same: this pass fires them
            self._replicas.confirm_or_log(f"the claim of {len(claimed)} due schedules")
        return claimed

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

    def _failed(self, name: str, error: str, what: str) -> None:
        self._scripts["fail"](keys=[SCHEDULE_KEY.format(name=name), DUE_KEY],
                              args=[name, error, self._disable_after, what])

    def _disable(self, name: str, reason: str) -> None:
        self._change(name, {"enabled": False, "disabled_reason": reason}, due="drop")

    def _change(self, name: str, fields: dict, *, due: str = "", pipe: redis.client.Pipeline | None = None) -> None:
        """Patch `fields` of the schedule (if it exists) and move its due time as `due` says, in one step."""
        self._scripts["change"](keys=[SCHEDULE_KEY.format(name=name), DUE_KEY], args=[name, json.dumps(fields), due],
                                client=self._redis if pipe is None else pipe)
