"""A build's end, in one atomic step: the final record, the in-flight id and the heartbeat let go, the counters
of ended builds, a stored spec's history pruned and its schedule told, the log's last line and end marker (which
carries the final record), and for a worker's success Celery's own result of the task, all in one Lua script, so no
reader ever sees half an end. Decided once: only the caller whose script ended the build is told so."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import redis

from config.settings import Settings
from core.errors import BuildCancelled
from core.phases import BuildPhase
from core.reference import parse_reference
from core.result import BuildResult, utcnow
from core.stored import LUA_IS_SCHEDULED, HistoryMark
from core.stores.builds import (
    CANCEL_KEY,
    HEARTBEATS_KEY,
    INFLIGHT_KEY,
    LAST_IMAGE_KEY,
    LAST_IMAGE_TTL_S,
    LOCK_KEY,
    LUA_PHASES,
    LUA_PUT_RECORD,
    RECORD_KEY,
)
from core.stores.logs import LOG_END_FIELD, LOG_KEY, LOG_LINE_FIELD, LOG_RESULT_FIELD
from core.stores.metrics import (
    DURATIONS_KEPT,
    DURATIONS_KEY,
    FINISHED_KEY,
    HOURLY_KEY,
    HOURS_SHOWN,
)
from core.stores.schedules import LUA_SCHEDULED_BUILD_ENDED
from core.stores.specs import ENTRY_KEY, LUA_PRUNE_HISTORY
from core.tagging import builder_of

# KEYS: record, in-flight id, heartbeats, log, ended counts, this hour's counts, durations, history entry, the
# target's lock, the cancel flag, the last image under the build's name.
# ARGV: final record, its expiry (for a record written without a submission), id, the phase the build must be in
# ('' any that has not ended), final phase, the hour's expiry, a duration line ('' none), durations kept, the log's
# last line and whether there is one, the log's length and expiry, the end marker's fields, the lock's token ('' when
# the ender holds no lock: a queued build cancelled), fields to write on the stored record ('' to write the final
# record whole; it stands in where none is stored), '1' to refuse a build whose cancel was asked for, and for a
# scheduled build's schedule: the error to count ('' for a success), and the failures in a row that disable it; the
# succeeded and the failed builds a stored spec's history keeps; the image to keep as the name's last ('' none) and
# for how long; and with the result key, Celery's encoded result up to the task's return value and after it, and
# its expiry ('0' none). A stored spec's history and schedule are named in the script, from the build's history mark.
# Returns 0 when the build had ended already (or was not in the expected phase), -1 when refused for a cancel; else
# its history entry ('' none) and the final record as written.
# Fewest commands: only a begun build has a heartbeat; the hour's counts get their expiry with their first count;
# durations are trimmed once they are twice the kept ones (readers read those); the last line rides in the end
# marker's entry.
_END = LUA_PHASES + LUA_PUT_RECORD + LUA_IS_SCHEDULED + LUA_SCHEDULED_BUILD_ENDED + LUA_PRUNE_HISTORY + f"""
local PENDING, SUCCEEDED, LINE = '{BuildPhase.PENDING.value}', '{BuildPhase.SUCCEEDED.value}', '{LOG_LINE_FIELD}'
""" + """
local raw = redis.call('GET', KEYS[1])
local record = ARGV[1]
local began = true
if raw then
  local stored = cjson.decode(raw)
  if is_final(stored['phase']) or (ARGV[4] ~= '' and stored['phase'] ~= ARGV[4]) then return 0 end
  began = stored['phase'] ~= PENDING
  if ARGV[16] ~= '' then
    for field, value in pairs(cjson.decode(ARGV[16])) do stored[field] = value end
    record = cjson.encode(stored)
  end
end
if ARGV[17] == '1' and redis.call('EXISTS', KEYS[10]) == 1 then return -1 end
put_record(KEYS[1], record, raw, ARGV[2])
if KEYS[12] and ARGV[5] == SUCCEEDED then
  local result = ARGV[24] .. record .. ARGV[25]
  if ARGV[26] == '0' then redis.call('SET', KEYS[12], result)
  else redis.call('SET', KEYS[12], result, 'EX', ARGV[26]) end
  redis.call('PUBLISH', KEYS[12], result)
end
if redis.call('GET', KEYS[2]) == ARGV[3] then redis.call('DEL', KEYS[2]) end
if began then redis.call('ZREM', KEYS[3], ARGV[3]) end
if ARGV[15] ~= '' and redis.call('GET', KEYS[9]) == ARGV[15] then redis.call('DEL', KEYS[9]) end
redis.call('HINCRBY', KEYS[5], ARGV[5], 1)
if redis.call('HINCRBY', KEYS[6], ARGV[5], 1) == 1 then redis.call('EXPIRE', KEYS[6], ARGV[6]) end
if ARGV[7] ~= '' and redis.call('LPUSH', KEYS[7], ARGV[7]) > 2 * tonumber(ARGV[8]) then
  redis.call('LTRIM', KEYS[7], 0, tonumber(ARGV[8]) - 1)
end
if ARGV[5] == SUCCEEDED and ARGV[22] ~= '' then redis.call('SET', KEYS[11], ARGV[22], 'EX', ARGV[23]) end
local marker = {ARGV[13], ARGV[5], ARGV[14], record}
if ARGV[10] == '1' then marker = {LINE, ARGV[9], unpack(marker)} end
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[11], '*', unpack(marker))
redis.call('EXPIRE', KEYS[4], ARGV[12])
local entry = redis.call('GET', KEYS[8])
if entry then
  local mark = cjson.decode(entry)
  prune_history(mark['name'], ARGV[20], ARGV[21])
  if is_scheduled(mark['trigger']) then
    scheduled_build_ended(mark['name'], ARGV[18] == '', ARGV[18], ARGV[19])
  end
end
return {entry or '', record}
"""


@dataclass(frozen=True)
class TaskResult:
    """Celery's result of a build's task as its result backend writes it, the final record being the task's return
    value: `before` + record + `after` under `key`, published on it too, by the end itself. A waiter on Celery's
    result learns of the end in the same step as every other reader, and the worker makes no round trip for it."""

    key: str
    before: str
    after: str
    expires_s: int | None


@dataclass(frozen=True)
class Ended:
    """What the one caller that ended a build learns: the final record as written, and the stored spec it was a
    build of, if any."""

    record: BuildResult
    spec_name: str | None = None


class BuildEnds:
    """Ends builds, each once."""

    def __init__(self, client: redis.Redis, settings: Settings):
        self._end = client.register_script(_END)
        self._settings = settings

    def end(self, final: BuildResult, *, expected: BuildPhase | None = None, last_line: str | None = None,
            lock_token: str = "", fields: dict[str, Any] | None = None, unless_cancelled: bool = False,
            task_result: TaskResult | None = None) -> Ended | None:
        """End the build with `final` unless it has ended already (or is not in the `expected` phase), letting go
        of the target's lock if `lock_token` holds it: what the one caller that ended it learns, None for everyone
        else. Only that caller's `last_line` is written, so nothing follows the end marker.

        With `fields`, those are written on the stored record (which nobody else can change meanwhile), `final`
        standing in only where none is stored. `unless_cancelled` refuses a build whose cancel was asked for
        (BuildCancelled), for an ender that must not pass one by. A success with `task_result` writes Celery's
        result of the build's task too."""
        name = self._name_of(final)
        args = [*self._args(final, expected, last_line), lock_token, json.dumps(fields) if fields else "",
                "1" if unless_cancelled else "", _why_not_succeeded(final), self._settings.schedule_disable_after,
                self._settings.history_keep_succeeded, self._settings.history_keep_failed,
                final.image if name else "", LAST_IMAGE_TTL_S, *_result_args(task_result)]
        keys = self._keys(final, name) + ([task_result.key] if task_result else [])
        found = self._end(keys=keys, args=args)
        if found == -1:
            raise BuildCancelled("cancelled before it started")
        return _ended(*found) if found else None

    def _keys(self, final: BuildResult, name: str | None) -> list[str]:
        ended_at = (final.finished_at or utcnow()).timestamp()
        return [RECORD_KEY.format(id=final.id), INFLIGHT_KEY.format(target=final.image), HEARTBEATS_KEY,
                LOG_KEY.format(id=final.id), FINISHED_KEY, HOURLY_KEY.format(hour=int(ended_at // 3600)),
                DURATIONS_KEY, ENTRY_KEY.format(id=final.id), LOCK_KEY.format(target=final.image),
                CANCEL_KEY.format(id=final.id), LAST_IMAGE_KEY.format(name=name or "")]

    def _name_of(self, final: BuildResult) -> str | None:
        """The spec name the build's image is under (target_for turned round), for its layers to be imported by the
        next build under that name on any host."""
        try:
            reference = parse_reference(final.image)
        except ValueError:
            return None
        return builder_of(reference, repo_prefix=self._settings.repo_prefix, push_repo=self._settings.push_repo)

    def _args(self, final: BuildResult, expected: BuildPhase | None, last_line: str | None) -> list:
        settings = self._settings
        return [final.to_json(), settings.result_expires_s, final.id, expected.value if expected else "",
                final.phase.value, (HOURS_SHOWN + 1) * 3600, _duration_line(final), DURATIONS_KEPT, last_line or "",
                "1" if last_line is not None else "", settings.log_max_lines, settings.log_retention_s, LOG_END_FIELD,
                LOG_RESULT_FIELD]


def _result_args(task_result: TaskResult | None) -> list:
    if task_result is None:
        return []
    return [task_result.before, task_result.after, task_result.expires_s or 0]


def _duration_line(final: BuildResult) -> str:
    """`ended_at duration_s` for a build that ran (one that never started took no time worth counting)."""
    if not (final.started_at and final.finished_at):
        return ""
    return f"{final.finished_at.timestamp()} {(final.finished_at - final.started_at).total_seconds()}"


def _why_not_succeeded(final: BuildResult) -> str:
    """What a schedule says of its build that did not succeed ("" for one that did)."""
    if final.succeeded:
        return ""
    return f"build {final.id} ended {final.phase.value}" + (f": {final.error}" if final.error else "")


def _ended(entry: str, record: str) -> Ended:
    final = BuildResult.model_validate_json(record)
    if not entry:
        return Ended(final)
    mark = HistoryMark.model_validate_json(entry)
    return Ended(final, mark.name)
