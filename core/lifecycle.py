"""How a build's record moves: the one path by which it starts, changes and ends, for worker and producer alike.

An end is decided once, and written whole, by one Lua script (core.stores.ending); only the caller that made it
follows it up: the spec's history pruned, its schedule told, and the specs built on a new image announced."""

from __future__ import annotations

import logging
from typing import Any

from core.events import IMAGE_CHANGED
from core.phases import BuildPhase
from core.reference import parse_reference
from core.result import BuildResult
from core.stored import SCHEDULED_TRIGGERS
from core.stores.builds import Begun, BuildState
from core.stores.ending import BuildEnds, Ended
from core.stores.schedules import ScheduleStore
from core.stores.specs import SpecStore

logger = logging.getLogger(__name__)


class Lifecycle:
    """Moves build records through their phases; a stored spec's build is its history's without copies (the
    history keeps the build's record)."""

    def __init__(self, state: BuildState, ends: BuildEnds, specs: SpecStore, schedules: ScheduleStore):
        self._state = state
        self._ends = ends
        self._specs = specs
        self._schedules = schedules

    def begin(self, running: BuildResult, fields: dict[str, Any], token: str, message: dict[str, Any]) -> Begun:
        """A delivery's beginning: the target's lock taken with `token` and the record Running, in one step; or
        `ended`, `cancelled`, `locked` (nothing written) when the build must not run now."""
        return self._state.begin(running, fields, token, message)

    def advance(self, result: BuildResult) -> bool:
        """A change short of the end (a step, a requeue); False if the build has ended meanwhile."""
        return self._state.advance(result)

    def end(self, final: BuildResult, *, expected: BuildPhase | None = None, last_line: str | None = None,
            lock_token: str = "") -> bool:
        """End the build, once: True for the caller that ended it, False if it had ended already (or was not in
        the `expected` phase); a delivery's lock on the target (`lock_token`) goes in the same step. Only that
        caller writes `last_line`, so nothing follows the log's end marker."""
        ended = self._ends.end(final, expected=expected, last_line=last_line, lock_token=lock_token)
        if ended is None:
            return False
        if ended.spec_name is not None:
            self._follow_up(final, ended)
        return True

    def _follow_up(self, final: BuildResult, ended: Ended) -> None:
        """A stored spec's build has ended: its history pruned, its schedule told, its new image announced. The
        build has ended whatever happens here."""
        try:
            self._specs.prune(ended.spec_name)
            if ended.trigger in SCHEDULED_TRIGGERS:
                self._schedules.build_ended(ended.spec_name, succeeded=final.succeeded, error=_why_not_succeeded(final))
            if final.succeeded and not final.skipped:
                self._downstream(final.image)
        except Exception:
            logger.exception("could not follow up the end of build %s of %s", final.id, ended.spec_name)

    def _downstream(self, image: str) -> None:
        """Announce a new image that stored specs are built on (IMAGE_CHANGED): a lost announcement leaves those
        specs to their schedules or the next push."""
        if self._specs.based_on([parse_reference(image)]):
            IMAGE_CHANGED.send(image)


def _why_not_succeeded(final: BuildResult) -> str | None:
    if final.succeeded:
        return None
    return f"build {final.id} ended {final.phase.value}" + (f": {final.error}" if final.error else "")
