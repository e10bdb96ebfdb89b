"""What push triggers have done, kept in Redis: the base digest each stored spec was last queued on by a trigger, and
the one recheck pending per base. Key names and Lua scripts for both live here and nowhere else."""

from __future__ import annotations

import redis

TRIGGERED_ON_KEY = "imagebuilder:triggered-on:{name}"  # `tag@base digest` a trigger last queued the spec's build on
RECHECK_KEY = "imagebuilder:recheck:{base}"  # the id of the one check task that looks at this base again

# Claim: mark the spec as queued by a trigger on this `tag@digest`. The mark from before ('' for none), or nil when
# it is this one already: a trigger has built, or is building, this tag on this base, and must not do it again.
_CLAIM = """
local previous = redis.call('GET', KEYS[1])
if previous == ARGV[1] then return false end
redis.call('SET', KEYS[1], ARGV[1])
return previous or ''
"""

# Unclaim: put back the mark from before a claim whose build was not queued after all, unless it moved on meanwhile.
_UNCLAIM = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '' then redis.call('DEL', KEYS[1]) else redis.call('SET', KEYS[1], ARGV[2]) end
return 1
"""

# Hold: the base's recheck is this task's (now, or already), for ARGV[2] more seconds; 0 if another task's.
_HOLD = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class TriggerStore:
    """Trigger claims per stored spec, and recheck holds per base image."""

    def __init__(self, client: redis.Redis):
        self._redis = client
        self._scripts = {name: client.register_script(text) for name, text in (
            ("claim", _CLAIM), ("unclaim", _UNCLAIM), ("hold", _HOLD), ("release", _RELEASE))}

    def marks(self, names: list[str]) -> dict[str, str]:
        """The `tag@base digest` each of these specs was last queued on by a trigger, where one was; one round
        trip."""
        found = self._redis.mget([TRIGGERED_ON_KEY.format(name=name) for name in names]) if names else []
        return {name: mark for name, mark in zip(names, found) if mark}

    def claim(self, name: str, mark: str) -> str | None:
        """Mark that a trigger queues `name`'s build on `mark` (`tag@base digest`): the mark from before ('' for
        none), or None when a trigger has queued it on this one already, whatever that build's outcome."""
        return self._scripts["claim"](keys=[TRIGGERED_ON_KEY.format(name=name)], args=[mark])

    def unclaim(self, name: str, mark: str, previous: str) -> None:
        """Undo a claim whose build was not queued by it (it attached to one already queued or running, or sending
        failed)."""
        self._scripts["unclaim"](keys=[TRIGGERED_ON_KEY.format(name=name)], args=[mark, previous])

    def forget(self, name: str) -> None:
        self._redis.delete(TRIGGERED_ON_KEY.format(name=name))

    def hold_rechecks(self, bases: list[str], holder: str, hold_s: int) -> list[str]:
        """Of these bases, those whose one pending recheck is `holder`'s (taken now, or its own already), held for
        `hold_s` more seconds; one round trip."""
        pipe = self._redis.pipeline(transaction=False)
        for base in bases:
            self._scripts["hold"](keys=[RECHECK_KEY.format(base=base)], args=[holder, hold_s], client=pipe)
        return [base for base, held in zip(bases, pipe.execute()) if held]

    def release_rechecks(self, bases: list[str], holder: str) -> None:
        """Let go of these bases' rechecks, where `holder` holds them; one round trip."""
        pipe = self._redis.pipeline(transaction=False)
        for base in bases:
            self._scripts["release"](keys=[RECHECK_KEY.format(base=base)], args=[holder], client=pipe)
        pipe.execute()
