"""How a build's record moves: the one path by which it starts, changes and ends, for worker and producer alike.

An end is decided once, and written whole (a stored spec's history pruned and its schedule told with it), by one Lua
script (core.stores.ending); only the caller that made it follows it up, announcing a new image that stored specs
are built on."""

from __future__ import annotations

import logging
from typing import Any

from core.events import IMAGE_CHANGED
from core.phases import BuildPhase
from core.reference import parse_reference
from core.result import BuildResult
from core.stores.builds import Begun, BuildState
from core.stores.connection import Replicas
from core.stores.ending import BuildEnds, Ended, TaskResult
from core.stores.specs import SpecStore

logger = logging.getLogger(__name__)


class Lifecycle:
    """Moves build records through their phases; a stored spec's build is its history's without copies (the
    history keeps the build's record)."""

    def __init__(self, state: BuildState, ends: BuildEnds, specs: SpecStore, replicas: Replicas):
        self._state = state
        self._ends = ends
        self._specs = specs
        self._replicas = replicas

    def begin(self, running: BuildResult, fields: dict[str, Any], token: str, message: dict[str, Any]) -> Begun:
        """A delivery's beginning: the target's lock taken with `token` and the record Running, in one step; or
        `ended`, `cancelled`, `locked` (nothing written) when the build must not run now."""
        return self._state.begin(running, fields, token, message)

    def advance(self, result: BuildResult) -> bool:
        """A change short of the end (a step, a requeue); False if the build has ended meanwhile."""
        return self._state.advance(result)

    def end(self, final: BuildResult, *, expected: BuildPhase | None = None, last_line: str | None = None,
            lock_token: str = "", fields: dict[str, Any] | None = None, unless_cancelled: bool = False,
            task_result: TaskResult | None = None) -> BuildResult | None:
        """End the build, once: the final record as written for the caller that ended it, None if it had ended
        already (or was not in the `expected` phase); a delivery's lock on the target (`lock_token`) goes in the
        same step. Only that caller writes `last_line`, so nothing follows the log's end marker. With `fields`,
        those are written on the stored record, `final` standing in where none is stored; `unless_cancelled`
        raises BuildCancelled, writing nothing, for a build whose cancel was asked for; a success with
        `task_result` writes Celery's result of the build's task in the same step."""
        ended = self._ends.end(final, expected=expected, last_line=last_line, lock_token=lock_token, fields=fields,
                               unless_cancelled=unless_cancelled, task_result=task_result)
        if ended is None:
            return None
        self._replicas.confirm_or_log(f"the end of build {final.id}")  # lost, it would be delivered again
        if ended.spec_name is not None:
            self._follow_up(ended)
        return ended.record

    def _follow_up(self, ended: Ended) -> None:
        """A stored spec's build has ended: its new image announced. The build has ended whatever happens here."""
        final = ended.record
        try:
            if final.succeeded and not final.skipped:
                self._downstream(final.image)
        except Exception:
            logger.exception("could not follow up the end of build %s of %s", final.id, ended.spec_name)

    def _downstream(self, image: str) -> None:
        """Announce a new image that stored specs are built on (IMAGE_CHANGED): a lost announcement leaves those
        specs to their schedules or the next push."""
        if self._specs.based_on([parse_reference(image)]):
            IMAGE_CHANGED.send(image)

