"""Builds through the client: submit, status, wait, logs, cancel, and the listings the console shows."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import Any

from core.errors import AlreadyFinished
from core.phases import BuildPhase
from core.result import BuildResult, utcnow
from core.spec import ImageSpec, parse_spec
from core.stored import HistoryEntry, Trigger
from core.stores.builds import RECENT_BUILDS_KEPT, unknown_build
from producer.client.wiring import ClientWiring, translated
from producer.overview import BuildListing

WAIT_SLICE_S = 5.0


@translated
class Builds:
    """Submits builds to the `builds` queue and reads their records and logs."""

    def __init__(self, wiring: ClientWiring):
        self._stores = wiring.stores
        self._submitter = wiring.submitter

    def submit(self, spec: ImageSpec | Mapping[str, Any], *, force: bool = False) -> BuildResult:
        """Validate, compute the target, record it Pending and enqueue; raises before queueing on bad input."""
        return self._submitter.submit(spec if isinstance(spec, ImageSpec) else parse_spec(spec), force=force)

    def status(self, build_id: str) -> BuildResult:
        """The build's current record; UnknownBuild for an id nobody submitted."""
        return self._stores.builds.get(build_id)

    def cancel(self, build_id: str) -> BuildResult:
        """Cancel: a queued build ends Cancelled at once and never starts; a running one stops and pushes nothing.

        Raises AlreadyFinished (changing nothing) for a build that has ended, UnknownBuild for an unknown id."""
        before = self._stores.builds.request_cancel(build_id)
        if not before:
            raise unknown_build(build_id)
        if BuildPhase(before).is_final:
            raise AlreadyFinished(f"build {build_id} already ended {before}: nothing to cancel, nothing changed")
        if before == BuildPhase.PENDING.value:  # no worker has it: the canceller ends it, the one way builds end
            queued = self.status(build_id)
            self._stores.lifecycle.end(
                queued.model_copy(update={"phase": BuildPhase.CANCELLED, "finished_at": utcnow()}),
                expected=BuildPhase.PENDING, last_line="cancelled while queued: it never started")
        return self.status(build_id)

    def wait(self, build_id: str, *, timeout_s: float | None = None) -> BuildResult:
        """Block until the build has ended (its end is written whole, at once: the record, the counters, the log's
        end marker); TimeoutError after `timeout_s`. It wakes at the end marker, which carries the final record;
        the record itself is read again each slice, for a build whose log has gone."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        result, after = self.status(build_id), "0-0"
        while not result.phase.is_final:
            remaining_s = WAIT_SLICE_S if deadline is None else deadline - time.monotonic()
            if remaining_s <= 0:
                raise TimeoutError(f"build {build_id} still {result.phase.value} after {timeout_s} s")
            ended, after = self._stores.log.wait_end(build_id, after, min(remaining_s, WAIT_SLICE_S))
            result = ended or self.status(build_id)
        return result

    def logs(self, build_id: str, *, follow: bool = False) -> Iterator[str]:
        """The build's log lines; with `follow`, new lines as they come until the build ends."""
        self.status(build_id)
        return self._stores.log.lines(build_id, follow=follow,
                                      is_over=lambda: self.status(build_id).phase.is_final)

    def recent(self, count: int, phase: BuildPhase | None = None) -> list[BuildListing]:
        """The newest builds (of the last RECENT_BUILDS_KEPT submitted), in `phase` only if given."""
        results = [r for r in self._stores.builds.recent(count if phase is None else RECENT_BUILDS_KEPT)
                   if phase is None or r.phase is phase][:count]
        entries = self._stores.specs.entries([r.id for r in results])
        return [_listing(result, entries.get(result.id)) for result in results]

    def listing(self, build_id: str) -> BuildListing:
        """The build, the stored spec it was for, and whether it can be built again (ended, spec still known)."""
        result = self.status(build_id)
        entry = self._stores.specs.entries([build_id]).get(build_id)
        known = entry is not None or self._stores.builds.message(build_id) is not None
        return _listing(result, entry).model_copy(update={"rebuildable": result.phase.is_final and known})

    def rebuild(self, build_id: str) -> BuildResult:
        """Build again what an ended build built: its stored spec as it is now, or the same ad-hoc spec."""
        entry = self._stores.specs.entries([build_id]).get(build_id)
        if entry is not None:
            return self._submitter.submit_stored(self._stores.specs.get(entry.name), Trigger.MANUAL, force=True)
        message = self._stores.builds.message(build_id)
        if message is None:
            raise unknown_build(build_id)
        return self.submit(message["spec"], force=True)


def _listing(result: BuildResult, entry: HistoryEntry | None) -> BuildListing:
    if entry is None:
        return BuildListing(result=result)
    return BuildListing(result=result, spec_name=entry.name, trigger=entry.trigger)
