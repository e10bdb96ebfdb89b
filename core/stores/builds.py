"""Everything Redis holds about a build, by its id (record, message, counters, cancel flag, containers, log) and
by its target (the in-flight id, the lock, the heartbeat). Key names and Lua scripts live here and nowhere else.

Every check-and-set is one Lua script, so producers and workers on many machines agree without races."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio

from core.errors import UnknownBuild
from core.phases import LUA_IS_FINAL, BuildPhase
from core.result import BuildResult

RECORD_KEY = "imagebuilder:build:{id}"  # JSON BuildResult
JOB_KEY = "imagebuilder:job:{id}"  # hash: the task's kwargs (`message`, to redeliver it), `lost` and `attempts`
CANCEL_KEY = "imagebuilder:cancel:{id}"  # present once a cancel was asked for
CONTAINERS_KEY = "imagebuilder:containers:{id}"  # set: build containers the engine ran for the build
INFLIGHT_KEY = "imagebuilder:inflight:{target}"  # the id of the build now queued or running for a target
LOCK_KEY = "imagebuilder:lock:{target}"  # held by the one delivery building a target; kept alive by its watch
HEARTBEATS_KEY = "imagebuilder:heartbeats"  # sorted set: build id -> when its heartbeat expires (epoch s)
LAST_IMAGE_KEY = "imagebuilder:last-image:{name}"  # the image the last successful build under a name is at
RECENT_KEY = "imagebuilder:recent"  # sorted set: build id -> when it was submitted (epoch s), the newest kept
REQUEUED_KEY = "imagebuilder:requeued:{id}"  # a build sent again after the broker lost its message, for a while
BROKER_UNACKED_KEY = "unacked"  # kombu's: the messages delivered to a worker and not yet acknowledged
RECENT_BUILDS_KEPT = 1000
HEARTBEAT_TTL_S = 15
LAST_IMAGE_TTL_S = 90 * 24 * 3600  # a name not built for this long has no layers worth importing left
LOCK_TTL_S = HEARTBEAT_TTL_S

LUA_PHASES = LUA_IS_FINAL + f"""
local function phase_of(id)
  local record = redis.call('GET', '{RECORD_KEY.format(id="")}' .. id)
  if not record then return nil end
  return cjson.decode(record)['phase']
end
"""
# A record keeps the expiry it was given at submission (none for a stored spec's build, kept with its history);
# one written without a submission (a message sent by another language) expires like any other.
LUA_PUT_RECORD = """
local function put_record(key, value, existed, expires_s)
  if existed then return redis.call('SET', key, value, 'KEEPTTL') end
  return redis.call('SET', key, value, 'EX', expires_s)
end
"""

# Submit: attach to the active build of the target, or record and claim a new one. Returns the id to use. A kept
# record (ARGV[7]: a stored spec's build, in its history) has no expiry: pruning the history removes it.
_SUBMIT = LUA_PHASES + """
local current = redis.call('GET', KEYS[1])
if current then
  local phase = phase_of(current)
  if phase and not is_final(phase) then return current end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[4])
if ARGV[7] == '1' then redis.call('SET', KEYS[2], ARGV[2]) else redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[4]) end
redis.call('HSET', KEYS[3], 'message', ARGV[3])
redis.call('EXPIRE', KEYS[3], ARGV[4])
redis.call('ZADD', KEYS[4], ARGV[5], ARGV[1])
redis.call('ZREMRANGEBYRANK', KEYS[4], 0, -1 - tonumber(ARGV[6]))
return ARGV[1]
"""

# Worker: begin one delivery of a build, in one step. Unless the build has ended (-> 'ended') or a cancel was asked
# for (-> 'cancelled'): hold the target's lock (-> 'locked' if another delivery does), make the build the target's
# in-flight one unless another active build is, start its heartbeat, and write it Running (ARGV[7]'s fields on
# the record there, or ARGV[8] whole for a message no submission recorded, whose message is kept then). Returns the
# outcome, the phase the record had, and the record.
_BEGIN = LUA_PHASES + LUA_PUT_RECORD + """
local raw = redis.call('GET', KEYS[5])
local before = raw and cjson.decode(raw) or nil
if before and is_final(before['phase']) then return {'ended', before['phase'], raw} end
if redis.call('EXISTS', KEYS[6]) == 1 then return {'cancelled', before and before['phase'] or '', raw or ''} end
if not redis.call('SET', KEYS[2], ARGV[3], 'NX', 'PX', ARGV[4]) then return {'locked', '', ''} end
local current = redis.call('GET', KEYS[3])
local phase = current and current ~= ARGV[5] and phase_of(current)
if not (phase and not is_final(phase)) then redis.call('SET', KEYS[3], ARGV[5], 'EX', ARGV[2]) end
redis.call('ZADD', KEYS[4], ARGV[6], ARGV[5])
local record = ARGV[8]
local had = before and before['phase'] or ''
if before then
  for field, value in pairs(cjson.decode(ARGV[7])) do before[field] = value end
  record = cjson.encode(before)
else
  redis.call('HSETNX', KEYS[1], 'message', ARGV[1])
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
put_record(KEYS[5], record, raw, ARGV[2])
return {'started', had, record}
"""

# Advance: write a record that has not ended (a step, a requeue) unless the stored one has ended.
_ADVANCE = LUA_PHASES + LUA_PUT_RECORD + """
local raw = redis.call('GET', KEYS[1])
if raw and is_final(cjson.decode(raw)['phase']) then return 0 end
put_record(KEYS[1], ARGV[1], raw, ARGV[2])
return 1
"""

# Fill in the base digest of an ended build that did not know it (a skipped one, whose image says what it was
# built on: "" where it says nothing); nothing if the record is gone or knows its base digest already.
_NOTE_BASE_DIGEST = """
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
local record = cjson.decode(raw)
if record['base_digest'] ~= nil and record['base_digest'] ~= cjson.null then return 0 end
record['base_digest'] = ARGV[1]
redis.call('SET', KEYS[1], cjson.encode(record), 'KEEPTTL')
return 1
"""

# Cancel: flag a build that has not ended; the phase before ('' for an unknown id). Ending it is the caller's.
_CANCEL = LUA_PHASES + """
local raw = redis.call('GET', KEYS[1])
if not raw then return '' end
local before = cjson.decode(raw)['phase']
if not is_final(before) then redis.call('SET', KEYS[2], '1', 'EX', ARGV[1]) end
return before
"""

# The ids of the builds submitted before ARGV[1] (of those RECENT_KEY keeps) that are still Pending.
_PENDING_BEFORE = LUA_PHASES + """
local pending = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])) do
  if phase_of(id) == ARGV[2] then table.insert(pending, id) end
end
return pending
"""

_DELETE_IF_EQUAL = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# Keep alive: the heartbeat, and the lock while this delivery holds it (or takes it back if it lapsed). 0 if lost.
_KEEP_ALIVE = """
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if not current then return redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) and 1 or 0 end
return 0
"""

# Let go: stop the heartbeat and free the lock if this delivery still holds it.
_LET_GO = """
redis.call('ZREM', KEYS[2], ARGV[2])
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class Begun:
    """How a delivery's beginning went: `started`, `ended`, `cancelled` or `locked`; the phase the record had
    before (Running: an earlier delivery was lost), and the record as it is now."""

    outcome: str
    before: BuildPhase | None
    record: BuildResult | None


def unknown_build(build_id: str) -> UnknownBuild:
    return UnknownBuild(f"no build with id {build_id!r} (never submitted, or its record has expired)")


def builds_running(client: redis.Redis) -> int:
    """Builds whose heartbeat is being kept alive now."""
    return int(client.zcard(HEARTBEATS_KEY))


class BuildState:
    """A build's record, message, counters, cancel flag and containers, and its target's in-flight id and lock."""

    def __init__(self, client: redis.Redis, *, expires_s: int):
        self._redis = client
        self._expires_s = expires_s
        self._scripts = {name: client.register_script(text) for name, text in (
            ("submit", _SUBMIT), ("begin", _BEGIN), ("advance", _ADVANCE),
            ("note_base_digest", _NOTE_BASE_DIGEST),
            ("cancel", _CANCEL), ("delete_if_equal", _DELETE_IF_EQUAL), ("keep_alive", _KEEP_ALIVE),
            ("let_go", _LET_GO), ("pending_before", _PENDING_BEFORE))}

    # -- the record ----------------------------------------------------------------------------------------
    def find(self, build_id: str) -> BuildResult | None:
        raw = self._redis.get(RECORD_KEY.format(id=build_id))
        return BuildResult.model_validate_json(raw) if raw else None

    def last_image(self, name: str) -> str | None:
        """The image of the last successful build under `name`, stored spec or not (the END script writes it)."""
        return self._redis.get(LAST_IMAGE_KEY.format(name=name))

    def get(self, build_id: str) -> BuildResult:
        result = self.find(build_id)
        if result is None:
            raise unknown_build(build_id)
        return result

    def submit(self, pending: BuildResult, message: dict[str, Any], *, kept: bool = False) -> str:
        """Record `pending` as the target's build, or return the id of the build already active for it. A kept
        record (a stored spec's build) does not expire: it is its history's, and goes when the history drops it."""
        keys = [INFLIGHT_KEY.format(target=pending.image), RECORD_KEY.format(id=pending.id),
                JOB_KEY.format(id=pending.id), RECENT_KEY]
        args = [pending.id, pending.to_json(), json.dumps(message), self._expires_s,
                pending.submitted_at.timestamp(), RECENT_BUILDS_KEPT, "1" if kept else ""]
        return self._scripts["submit"](keys=keys, args=args)

    def withdraw(self, pending: BuildResult) -> None:
        """Undo a submission whose message could not be sent."""
        self.release(pending.image, pending.id)
        self._redis.delete(RECORD_KEY.format(id=pending.id), JOB_KEY.format(id=pending.id))
        self._redis.zrem(RECENT_KEY, pending.id)

    def recent(self, count: int) -> list[BuildResult]:
        """The newest `count` builds submitted whose records have not expired, newest first."""
        return self._records(self._redis.zrevrange(RECENT_KEY, 0, count - 1))

    def running(self) -> list[BuildResult]:
        """The builds whose heartbeat is kept alive now (each by the worker running it)."""
        return self._records(self._redis.zrange(HEARTBEATS_KEY, 0, -1))

    def _records(self, build_ids: list[str]) -> list[BuildResult]:
        """The records of those builds that still have one, in the order given; one round trip."""
        found = self.records(build_ids)
        return [found[i] for i in build_ids if i in found]

    def begin(self, running: BuildResult, fields: dict[str, Any], token: str, message: dict[str, Any]) -> Begun:
        """Begin a delivery (see _BEGIN): write `fields` on the build's record (`running` whole where it has none),
        having taken the target's lock with `token`; or say why not, in one round trip."""
        keys = [JOB_KEY.format(id=running.id), LOCK_KEY.format(target=running.image),
                INFLIGHT_KEY.format(target=running.image), HEARTBEATS_KEY, RECORD_KEY.format(id=running.id),
                CANCEL_KEY.format(id=running.id)]
        args = [json.dumps(message), self._expires_s, token, LOCK_TTL_S * 1000, running.id,
                time.time() + HEARTBEAT_TTL_S, json.dumps(fields), running.to_json()]
        outcome, before, raw = self._scripts["begin"](keys=keys, args=args)
        return Begun(outcome, BuildPhase(before) if before else None,
                     BuildResult.model_validate_json(raw) if raw else None)

    def advance(self, result: BuildResult) -> bool:
        """Store a change of a build that has not ended; False (nothing written) if it has ended meanwhile."""
        return bool(self._scripts["advance"](keys=[RECORD_KEY.format(id=result.id)],
                                             args=[result.to_json(), self._expires_s]))

    def note_base_digest(self, build_id: str, base_digest: str) -> None:
        """Record the base digest of an ended build that did not know it (a skipped one: its image's label says;
        "" where it says nothing, so that it is not asked again)."""
        self._scripts["note_base_digest"](keys=[RECORD_KEY.format(id=build_id)], args=[base_digest])

    def records(self, build_ids: list[str]) -> dict[str, BuildResult]:
        """The records of those builds that still have one, by id; one round trip."""
        raws = self._redis.mget([RECORD_KEY.format(id=i) for i in build_ids]) if build_ids else []
        return {i: BuildResult.model_validate_json(raw) for i, raw in zip(build_ids, raws) if raw}

    def forget(self, build_ids: list[str]) -> None:
        """Drop the records of builds a history no longer keeps."""
        if build_ids:
            self._redis.delete(*[RECORD_KEY.format(id=i) for i in build_ids])

    # -- the message and its counters ------------------------------------------------------------------------
    def message(self, build_id: str) -> dict[str, Any] | None:
        raw = self._redis.hget(JOB_KEY.format(id=build_id), "message")
        return json.loads(raw) if raw else None

    def add_lost_delivery(self, build_id: str) -> int:
        """One more delivery died with its worker; how many have."""
        return int(self._redis.hincrby(JOB_KEY.format(id=build_id), "lost", 1))

    def add_attempt(self, build_id: str) -> int:
        """One more transient failure; how many there have been."""
        return int(self._redis.hincrby(JOB_KEY.format(id=build_id), "attempts", 1))

    # -- cancel ----------------------------------------------------------------------------------------------
    def request_cancel(self, build_id: str) -> str:
        """Flag the build for cancelling; the phase it had ('' for an unknown id)."""
        keys = [RECORD_KEY.format(id=build_id), CANCEL_KEY.format(id=build_id)]
        return self._scripts["cancel"](keys=keys, args=[self._expires_s])

    def cancel_requested(self, build_id: str) -> bool:
        return bool(self._redis.exists(CANCEL_KEY.format(id=build_id)))

    # -- the target: in-flight id, and the lock kept alive by the running build ----------------------------
    def release(self, target: str, build_id: str) -> None:
        self._scripts["delete_if_equal"](keys=[INFLIGHT_KEY.format(target=target)], args=[build_id])

    def keep_alive(self, target: str, token: str, build_id: str) -> bool:
        """Extend the lock and the heartbeat (one round trip); False if another delivery took the lock meanwhile."""
        keys = [LOCK_KEY.format(target=target), HEARTBEATS_KEY]
        args = [token, LOCK_TTL_S * 1000, time.time() + HEARTBEAT_TTL_S, build_id]
        return bool(self._scripts["keep_alive"](keys=keys, args=args))

    def let_go(self, target: str, token: str, build_id: str) -> None:
        """Stop the heartbeat and free the lock if this delivery still holds it (one round trip)."""
        self._scripts["let_go"](keys=[LOCK_KEY.format(target=target), HEARTBEATS_KEY], args=[token, build_id])

    def claim_undelivered(self, queues: tuple[str, ...], *, older_than_s: float) -> list[str]:
        """Builds Pending for over `older_than_s` whose message the broker holds neither in a queue nor as delivered
        to a worker: lost (a failover between a worker's pop of it and its note of the delivery, two commands to
        Redis, loses it). Each is returned to one caller, once in `older_than_s`."""
        pending = self._scripts["pending_before"](keys=[RECENT_KEY],
                                                  args=[time.time() - older_than_s, BuildPhase.PENDING.value])
        if not pending:
            return []
        held = self._broker_messages(queues)
        return [i for i in pending if i not in held and self._claim_requeue(i, older_than_s)]

    def _broker_messages(self, queues: tuple[str, ...]) -> str:
        """Every message the broker holds for `queues` or as delivered, as one text (an id in it is in one)."""
        pipe = self._redis.pipeline(transaction=True)
        for queue in queues:
            pipe.lrange(queue, 0, -1)
        pipe.hvals(BROKER_UNACKED_KEY)
        return "\n".join(message for messages in pipe.execute() for message in messages)

    def _claim_requeue(self, build_id: str, for_s: float) -> bool:
        return bool(self._redis.set(REQUEUED_KEY.format(id=build_id), "1", nx=True, ex=max(1, int(for_s))))

    def claim_dead(self) -> list[str]:
        """Builds whose heartbeat expired; each is returned to exactly one caller (ZREM decides)."""
        expired = self._redis.zrangebyscore(HEARTBEATS_KEY, "-inf", time.time())
        return [build_id for build_id in expired if self._redis.zrem(HEARTBEATS_KEY, build_id)]

    # -- containers a build ran, to remove whatever a crash left behind --------------------------------------
    def add_container(self, build_id: str, container_id: str) -> None:
        key = CONTAINERS_KEY.format(id=build_id)
        self._redis.sadd(key, container_id)
        self._redis.expire(key, self._expires_s)

    def containers(self, build_id: str) -> set[str]:
        return set(self._redis.smembers(CONTAINERS_KEY.format(id=build_id)))

    def forget_containers(self, build_id: str, container_ids: set[str]) -> None:
        if container_ids:
            self._redis.srem(CONTAINERS_KEY.format(id=build_id), *container_ids)


class ContainerLedger:
    """The build containers one build has run, kept in Redis so a later delivery can remove leftovers."""

    def __init__(self, state: BuildState, build_id: str):
        self._state = state
        self._build_id = build_id

    def add(self, container_id: str) -> None:
        self._state.add_container(self._build_id, container_id)

    def all(self) -> set[str]:
        return self._state.containers(self._build_id)

    def forget(self, container_ids: set[str]) -> None:
        self._state.forget_containers(self._build_id, container_ids)
