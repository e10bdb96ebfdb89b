"""How a build's record moves: the one path by which it starts, changes and ends, for worker and producer alike.

An end is decided once, by the Lua check-and-set on the record; only the caller that made it counts it in the
metrics and the schedule, and the log's end marker comes last, so whoever waits on it sees everything in place."""

from __future__ import annotations

import logging

from core.events import IMAGE_CHANGED
from core.phases import BuildPhase
from core.reference import parse_reference
from core.result import BuildResult
from core.stored import SCHEDULED_TRIGGERS
from core.stores.builds import BuildState
from core.stores.logs import BuildLog
from core.stores.metrics import Metrics
from core.stores.schedules import ScheduleStore
from core.stores.specs import SpecStore

logger = logging.getLogger(__name__)


class Lifecycle:
    """Moves build records through their phases and mirrors each change into the spec's history."""

    def __init__(self, state: BuildState, log: BuildLog, specs: SpecStore, schedules: ScheduleStore,
                 metrics: Metrics):
        self._state = state
        self._log = log
        self._specs = specs
        self._schedules = schedules
        self._metrics = metrics

    def start(self, running: BuildResult) -> tuple[str, bool]:
        """'started'; or 'ended' / 'cancelled' (nothing written) when the build must not run. Also whether the
        build is in a stored spec's history (True where not known): its entry is written before the build is
        queued, so a build without one at its start never has one, and its later changes need no mirroring."""
        outcome = self._state.start(running)
        if outcome != "started":
            return outcome, True
        return outcome, self._specs.build_changed(running) is not None

    def advance(self, result: BuildResult, *, in_history: bool = True) -> bool:
        """A change short of the end (a step, a requeue); False if the build has ended meanwhile."""
        if not self._state.advance(result):
            return False
        if in_history:
            self._specs.build_changed(result)
        return True

    def end(self, final: BuildResult, *, expected: BuildPhase | None = None, last_line: str | None = None,
            in_history: bool = True) -> bool:
        """End the build, once: True for the caller that ended it, False if it had ended already (or was not in
        the `expected` phase). Only that caller writes `last_line`, so nothing follows the log's end marker;
        the metrics, the last line and the end marker go in one round trip."""
        if not self._state.finish(final, expected):
            return False
        entry = self._specs.build_changed(final) if in_history else None
        if entry is not None and entry.trigger in SCHEDULED_TRIGGERS:
            self._schedules.build_ended(entry.name, succeeded=final.succeeded, error=_why_not_succeeded(final))
        self._log.close(final.id, final.phase.value, last_line=last_line,
                        along=lambda pipe: self._metrics.finished(final, pipe))
        if entry is not None and final.succeeded and not final.skipped:
            self._downstream(final.image)
        return True

    def _downstream(self, image: str) -> None:
        """Announce a new image that stored specs are built on (IMAGE_CHANGED). The build has ended whatever
        happens here: a lost announcement leaves those specs to their schedules or the next push."""
        try:
            if self._specs.based_on([parse_reference(image)]):
                IMAGE_CHANGED.send(image)
        except Exception:
            logger.exception("could not announce %s to the specs built on it", image)


def _why_not_succeeded(final: BuildResult) -> str | None:
    if final.succeeded:
        return None
    return f"build {final.id} ended {final.phase.value}" + (f": {final.error}" if final.error else "")
