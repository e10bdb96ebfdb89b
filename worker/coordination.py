"""Coordination through Redis: one build per target at a time, heartbeats of running builds, cancel requests.

Every check-and-set here is one Lua script, so producers and workers on many machines agree without races."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import redis

from worker.records import RECORD_KEY
from worker.result import BuildResult

INFLIGHT_KEY = "imagebuilder:inflight:{target}"  # the id of the build now queued or running for a target
JOB_KEY = "imagebuilder:job:{id}"  # hash: the task's kwargs (to redeliver it), lost and attempt counters
LOCK_KEY = "imagebuilder:lock:{target}"  # held by the one delivery building a target; kept alive by its watch
CANCEL_KEY = "imagebuilder:cancel:{id}"  # present once a cancel was asked for
HEARTBEATS_KEY = "imagebuilder:heartbeats"  # sorted set: build id -> when its heartbeat expires (epoch s)
CONTAINERS_KEY = "imagebuilder:containers:{id}"  # build containers the engine ran for a build
HEARTBEAT_TTL_S = 15
LOCK_TTL_S = HEARTBEAT_TTL_S

_ACTIVE = """
local function active(id)
  local record = redis.call('GET', 'imagebuilder:build:' .. id)
  if not record then return false end
  local phase = cjson.decode(record)['phase']
  return phase == 'Pending' or phase == 'Running'
end
"""

# Submit: attach to the active build of the target, or record and claim a new one. Returns the id to use.
_SUBMIT = _ACTIVE + """
local current = redis.call('GET', KEYS[1])
if current and active(current) then return current end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[4])
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[4])
redis.call('HSET', KEYS[3], 'message', ARGV[3])
redis.call('EXPIRE', KEYS[3], ARGV[4])
return ARGV[1]
"""

# Worker: make this build the target's in-flight one unless another active build already is.
_ADOPT = _ACTIVE + """
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[1] and active(current) then return current end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return ARGV[1]
"""

_DELETE_IF_EQUAL = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

_EXTEND_IF_EQUAL = """
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if not current then return redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) and 1 or 0 end
return 0
"""

# Cancel: flag it; a build still Pending ends Cancelled at once and frees its target.
_CANCEL = """
local raw = redis.call('GET', KEYS[1])
if not raw then return '' end
local record = cjson.decode(raw)
local before = record['phase']
if before ~= 'Pending' and before ~= 'Running' then return before end
redis.call('SET', KEYS[2], '1', 'EX', ARGV[2])
if before == 'Pending' then
  record['phase'] = 'Cancelled'
  record['finished_at'] = ARGV[1]
  redis.call('SET', KEYS[1], cjson.encode(record), 'KEEPTTL')
  local target = 'imagebuilder:inflight:' .. record['image']
  if redis.call('GET', target) == record['id'] then redis.call('DEL', target) end
end
return before
"""


class Coordinator:
    """The Redis side of delivery guarantees for one build service (one Redis)."""

    def __init__(self, client: redis.Redis, *, expires_s: int):
        self._redis = client
        self._expires_s = expires_s
        self._submit = client.register_script(_SUBMIT)
        self._adopt = client.register_script(_ADOPT)
        self._delete_if_equal = client.register_script(_DELETE_IF_EQUAL)
        self._extend_if_equal = client.register_script(_EXTEND_IF_EQUAL)
        self._cancel = client.register_script(_CANCEL)

    # -- submission and in-flight dedup ------------------------------------------------------------------
    def submit(self, pending: BuildResult, message: dict[str, Any]) -> str:
        """Record `pending` as the target's build, or return the id of the build already active for it."""
        keys = [INFLIGHT_KEY.format(target=pending.image), RECORD_KEY.format(id=pending.id),
                JOB_KEY.format(id=pending.id)]
        return self._submit(keys=keys, args=[pending.id, pending.to_json(), json.dumps(message), self._expires_s])

    def adopt(self, target: str, build_id: str) -> str:
        return self._adopt(keys=[INFLIGHT_KEY.format(target=target)], args=[build_id, self._expires_s])

    def release(self, target: str, build_id: str) -> None:
        self._delete_if_equal(keys=[INFLIGHT_KEY.format(target=target)], args=[build_id])

    def remember_message(self, build_id: str, message: dict[str, Any]) -> None:
        key = JOB_KEY.format(id=build_id)
        self._redis.hsetnx(key, "message", json.dumps(message))
        self._redis.expire(key, self._expires_s)

    def message(self, build_id: str) -> dict[str, Any] | None:
        raw = self._redis.hget(JOB_KEY.format(id=build_id), "message")
        return json.loads(raw) if raw else None

    def count(self, build_id: str, counter: str) -> int:
        """Add one to a per-build counter (`lost` deliveries, transient `attempts`) and return it."""
        return int(self._redis.hincrby(JOB_KEY.format(id=build_id), counter, 1))

    # -- the per-target lock, kept alive by the running build ----------------------------------------------
    def acquire(self, target: str) -> str | None:
        token = uuid.uuid4().hex
        ok = self._redis.set(LOCK_KEY.format(target=target), token, nx=True, px=LOCK_TTL_S * 1000)
        return token if ok else None

    def keep_alive(self, target: str, token: str, build_id: str) -> bool:
        """Extend the lock and the heartbeat; False if another delivery took the lock meanwhile."""
        self._redis.zadd(HEARTBEATS_KEY, {build_id: time.time() + HEARTBEAT_TTL_S})
        return bool(self._extend_if_equal(keys=[LOCK_KEY.format(target=target)], args=[token, LOCK_TTL_S * 1000]))

    def let_go(self, target: str, token: str, build_id: str) -> None:
        self._redis.zrem(HEARTBEATS_KEY, build_id)
        self._delete_if_equal(keys=[LOCK_KEY.format(target=target)], args=[token])

    def claim_dead(self) -> list[str]:
        """Builds whose heartbeat expired; each is returned to exactly one caller (ZREM decides)."""
        expired = self._redis.zrangebyscore(HEARTBEATS_KEY, "-inf", time.time())
        return [build_id for build_id in expired if self._redis.zrem(HEARTBEATS_KEY, build_id)]

    # -- cancel --------------------------------------------------------------------------------------------
    def cancel(self, build_id: str, now_iso: str) -> str:
        """Ask for a cancel (a Pending build ends Cancelled at once); the phase before, '' for an unknown id."""
        keys = [RECORD_KEY.format(id=build_id), CANCEL_KEY.format(id=build_id)]
        return self._cancel(keys=keys, args=[now_iso, self._expires_s])

    def cancel_requested(self, build_id: str) -> bool:
        return bool(self._redis.exists(CANCEL_KEY.format(id=build_id)))

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

    def __init__(self, coordinator: Coordinator, build_id: str):
        self._coordinator = coordinator
        self._build_id = build_id

    def add(self, container_id: str) -> None:
        self._coordinator.add_container(self._build_id, container_id)

    def all(self) -> set[str]:
        return self._coordinator.containers(self._build_id)

    def forget(self, container_ids: set[str]) -> None:
        self._coordinator.forget_containers(self._build_id, container_ids)
