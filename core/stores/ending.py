"""A build's end, in one atomic step: the final record, the in-flight id and the heartbeat let go, the counters
of ended builds, and the log's last line and end marker (which carries the final record), all in one Lua script,
so no reader ever sees half an end. Decided once: only the caller whose script ended the build is told so."""

from __future__ import annotations

from dataclasses import dataclass

import redis

from core.phases import BuildPhase
from core.result import BuildResult, utcnow
from core.stored import HistoryMark, Trigger
from core.stores.builds import (
    HEARTBEATS_KEY,
    INFLIGHT_KEY,
    LOCK_KEY,
    LUA_PHASES,
    LUA_PUT_RECORD,
    RECORD_KEY,
)
from core.stores.logs import LOG_END_FIELD, LOG_KEY, LOG_RESULT_FIELD
from core.stores.metrics import (
    DURATIONS_KEPT,
    DURATIONS_KEY,
    FINISHED_KEY,
    HOURLY_KEY,
    HOURS_SHOWN,
)
from core.stores.specs import ENTRY_KEY

# KEYS: record, in-flight id, heartbeats, log, ended counts, this hour's counts, durations, history entry, the
# target's lock.
# ARGV: final record, its expiry (for a record written without a submission), id, the phase the build must be in
# ('' any that has not ended), final phase, the hour's expiry, a duration line ('' none), durations kept, the log's
# last line and whether there is one, the log's length and expiry, the end marker's fields, the lock's token ('' when
# the ender holds no lock: a queued build cancelled).
# Returns 0 when the build had ended already (or was not in the expected phase); else its history entry ('' none).
_END = LUA_PHASES + LUA_PUT_RECORD + """
local raw = redis.call('GET', KEYS[1])
if raw then
  local before = cjson.decode(raw)['phase']
  if is_final(before) or (ARGV[4] ~= '' and before ~= ARGV[4]) then return 0 end
end
put_record(KEYS[1], ARGV[1], raw, ARGV[2])
if redis.call('GET', KEYS[2]) == ARGV[3] then redis.call('DEL', KEYS[2]) end
redis.call('ZREM', KEYS[3], ARGV[3])
if ARGV[15] ~= '' and redis.call('GET', KEYS[9]) == ARGV[15] then redis.call('DEL', KEYS[9]) end
redis.call('HINCRBY', KEYS[5], ARGV[5], 1)
redis.call('HINCRBY', KEYS[6], ARGV[5], 1)
redis.call('EXPIRE', KEYS[6], ARGV[6])
if ARGV[7] ~= '' then
  redis.call('LPUSH', KEYS[7], ARGV[7])
  redis.call('LTRIM', KEYS[7], 0, tonumber(ARGV[8]) - 1)
end
if ARGV[10] == '1' then redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[11], '*', 'line', ARGV[9]) end
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[11], '*', ARGV[13], ARGV[5], ARGV[14], ARGV[1])
redis.call('EXPIRE', KEYS[4], ARGV[12])
return redis.call('GET', KEYS[8]) or ''
"""


@dataclass(frozen=True)
class Ended:
    """What the one caller that ended a build learns: the stored spec it was a build of, if any, and why it ran."""

    spec_name: str | None = None
    trigger: Trigger | None = None


class BuildEnds:
    """Ends builds, each once."""

    def __init__(self, client: redis.Redis, *, expires_s: int, log_max_lines: int, log_retention_s: int):
        self._end = client.register_script(_END)
        self._expires_s = expires_s
        self._log_max_lines = log_max_lines
        self._log_retention_s = log_retention_s

    def end(self, final: BuildResult, *, expected: BuildPhase | None = None, last_line: str | None = None,
            lock_token: str = "") -> Ended | None:
        """End the build with `final` unless it has ended already (or is not in the `expected` phase), letting go
        of the target's lock if `lock_token` holds it: the history it belongs to for the one caller that ended it,
        None for everyone else. Only that caller's `last_line` is written, so nothing follows the end marker."""
        args = [*self._args(final, expected, last_line), lock_token]
        found = self._end(keys=self._keys(final), args=args)
        if found == 0:
            return None
        return _ended(found)

    def _keys(self, final: BuildResult) -> list[str]:
        ended_at = (final.finished_at or utcnow()).timestamp()
        return [RECORD_KEY.format(id=final.id), INFLIGHT_KEY.format(target=final.image), HEARTBEATS_KEY,
                LOG_KEY.format(id=final.id), FINISHED_KEY, HOURLY_KEY.format(hour=int(ended_at // 3600)),
                DURATIONS_KEY, ENTRY_KEY.format(id=final.id), LOCK_KEY.format(target=final.image)]

    def _args(self, final: BuildResult, expected: BuildPhase | None, last_line: str | None) -> list:
        return [final.to_json(), self._expires_s, final.id, expected.value if expected else "", final.phase.value,
                (HOURS_SHOWN + 1) * 3600, _duration_line(final), DURATIONS_KEPT, last_line or "",
                "1" if last_line is not None else "", self._log_max_lines, self._log_retention_s, LOG_END_FIELD,
                LOG_RESULT_FIELD]


def _duration_line(final: BuildResult) -> str:
    """`ended_at duration_s` for a build that ran (one that never started took no time worth counting)."""
    if not (final.started_at and final.finished_at):
        return ""
    return f"{final.finished_at.timestamp()} {(final.finished_at - final.started_at).total_seconds()}"


def _ended(entry: str) -> Ended:
    if not entry:
        return Ended()
    mark = HistoryMark.model_validate_json(entry)
    return Ended(mark.name, mark.trigger)
