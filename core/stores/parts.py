"""The parts of a multi-platform build, one per platform, each built by whichever worker claims it: the claim, its
heartbeat, its progress and its end, and taking back a part whose worker was lost. Key names and Lua scripts live
here and nowhere else; every change of a part is one script, guarded by the claim's token, so a stale worker can
never overwrite the part it lost."""

from __future__ import annotations

import json
from typing import Any

import redis

from core.result import PlatformPart
from core.stores.builds import CANCEL_KEY, LUA_PHASES, RECORD_KEY

PARTS_KEY = "imagebuilder:parts:{id}"  # hash: platform -> JSON PlatformPart, with the claim's `token`
PART_BEAT_KEY = "imagebuilder:part-beat:{id}:{platform}"  # the claiming worker's token while it is alive
PART_BEAT_TTL_S = 15

# Open: a Pending entry for each platform that has none (an earlier delivery's parts stay as they are).
_OPEN = """
for i = 1, #ARGV - 1 do redis.call('HSETNX', KEYS[1], ARGV[i], '{"phase":"Pending"}') end
redis.call('EXPIRE', KEYS[1], ARGV[#ARGV])
return redis.call('HGETALL', KEYS[1])
"""

# Claim: a Pending part of a build that has not ended and was not cancelled becomes Running under ARGV[2]'s token,
# by worker ARGV[3], with its heartbeat, one attempt more. 1 if claimed.
_CLAIM = LUA_PHASES + """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw or redis.call('EXISTS', KEYS[4]) == 1 then return 0 end
local record = redis.call('GET', KEYS[3])
if not record or is_final(cjson.decode(record)['phase']) then return 0 end
local part = cjson.decode(raw)
if part['phase'] ~= 'Pending' then return 0 end
part['phase'], part['token'], part['worker'], part['step'], part['error'] = 'Running', ARGV[2], ARGV[3], nil, nil
part['attempts'] = (part['attempts'] or 0) + 1
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(part))
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[4])
return 1
"""

# Patch: ARGV[3]'s fields on a part still Running under ARGV[2]'s token, and its heartbeat (ARGV[4] ms; '' ends
# it). 1 if written; 0 if the claim was lost (the part was stopped, or taken back from a worker thought lost).
_PATCH = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return 0 end
local part = cjson.decode(raw)
if part['phase'] ~= 'Running' or part['token'] ~= ARGV[2] then return 0 end
for field, value in pairs(cjson.decode(ARGV[3])) do part[field] = value end
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(part))
if ARGV[4] == '' then redis.call('DEL', KEYS[2]) else redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[4]) end
return 1
"""

# Take back: a Running part whose heartbeat has lapsed is Pending again, to be claimed anew. 1 if taken back.
_TAKE_BACK = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw or redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
local part = cjson.decode(raw)
if part['phase'] ~= 'Running' then return 0 end
part['phase'], part['token'], part['step'] = 'Pending', nil, nil
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(part))
return 1
"""

# Stop: every part that has not ended is Cancelled (its worker, if any, sees its claim gone and stops).
_STOP = """
local stopped = 0
local parts = redis.call('HGETALL', KEYS[1])
for i = 1, #parts, 2 do
  local part = cjson.decode(parts[i + 1])
  if part['phase'] == 'Pending' or part['phase'] == 'Running' then
    part['phase'], part['token'] = 'Cancelled', nil
    redis.call('HSET', KEYS[1], parts[i], cjson.encode(part))
    stopped = stopped + 1
  end
end
return stopped
"""


class PlatformParts:
    """The parts of one store's multi-platform builds."""

    def __init__(self, client: redis.Redis, *, expires_s: int):
        self._redis = client
        self._expires_s = expires_s
        self._scripts = {name: client.register_script(text) for name, text in (
            ("open", _OPEN), ("claim", _CLAIM), ("patch", _PATCH), ("take_back", _TAKE_BACK), ("stop", _STOP))}

    def open(self, build_id: str, platforms: list[str]) -> dict[str, PlatformPart]:
        """Each platform's part, Pending unless an earlier delivery of the build opened it already."""
        flat = self._scripts["open"](keys=[PARTS_KEY.format(id=build_id)], args=[*platforms, self._expires_s])
        return _parts(dict(zip(flat[::2], flat[1::2])))

    def read(self, build_id: str) -> dict[str, PlatformPart]:
        return _parts(self._redis.hgetall(PARTS_KEY.format(id=build_id)))

    def claim(self, build_id: str, platform: str, token: str, worker: str | None) -> bool:
        keys = [PARTS_KEY.format(id=build_id), _beat_key(build_id, platform), RECORD_KEY.format(id=build_id),
                CANCEL_KEY.format(id=build_id)]
        return bool(self._scripts["claim"](keys=keys, args=[platform, token, worker or "", PART_BEAT_TTL_S * 1000]))

    def patch(self, build_id: str, platform: str, token: str, fields: dict[str, Any], *, ended: bool = False) -> bool:
        """Write `fields` on the part this claim holds, and keep its heartbeat (or end it); False if the claim is
        lost."""
        keys = [PARTS_KEY.format(id=build_id), _beat_key(build_id, platform)]
        args = [platform, token, json.dumps(fields), "" if ended else PART_BEAT_TTL_S * 1000]
        return bool(self._scripts["patch"](keys=keys, args=args))

    def beat(self, build_id: str, platform: str, token: str) -> bool:
        return self.patch(build_id, platform, token, {})

    def take_back(self, build_id: str, platform: str) -> bool:
        """A Running part whose worker stopped beating is Pending again; True if it was."""
        keys = [PARTS_KEY.format(id=build_id), _beat_key(build_id, platform)]
        return bool(self._scripts["take_back"](keys=keys, args=[platform]))

    def stop(self, build_id: str) -> int:
        """Cancel every part that has not ended; how many were."""
        return int(self._scripts["stop"](keys=[PARTS_KEY.format(id=build_id)]))


def _beat_key(build_id: str, platform: str) -> str:
    return PART_BEAT_KEY.format(id=build_id, platform=platform)


def _parts(raw: dict) -> dict[str, PlatformPart]:
    return {_text(platform): PlatformPart.model_validate_json(value) for platform, value in raw.items()}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value

