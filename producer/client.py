"""The Python client: submit specs, read status and logs, wait for results. Never imports docker.

Redis's and the broker's errors are translated here, once, into the domain's StoreUnavailable."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar

from config.celery_config import redis_client
from config.settings import Settings
from producer.overview import (
    BuildListing, HourOfBuilds, Operations, SpecDetail, SpecListing, SpecPage, WorkerListing, percentile,
)
from worker.app import create_sender_app
from worker.buildstate import RECENT_BUILDS_KEPT, unknown_build
from worker.errors import AlreadyFinished, InvalidRequest
from worker.imagechain import ImageChains
from worker.metrics import OUT_OF_SCOPE, queue_depth
from worker.reference import ImageReference
from worker.result import BuildResult, utcnow
from worker.schedules import Policy, Schedule, parse_schedule
from worker.spec import ImageSpec, parse_spec
from worker.specstore import HistoryEntry, StoredSpec, Trigger
from worker.states import BuildPhase
from worker.stores import Stores, store_errors, stores_on
from worker.submission import MAX_PUSHED_PER_TASK, Submitter, send_pushed
from worker.tagging import resolve_target

WAIT_SLICE_S = 5.0
# A build whose end marker never came (its ender died between the record and the log) is over all the same.
LOG_END_GRACE_S = 10.0
DAY_S = 24 * 3600
T = TypeVar("T")


def _translated(method: Callable[..., T]) -> Callable[..., T]:
    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> T:
        with store_errors():
            return method(*args, **kwargs)

    return call


class BuildClient:
    """Submits builds to the `builds` queue and reads their records and logs from Redis."""

    def __init__(self, settings: Settings):
        self._settings = settings
        self._app = create_sender_app(settings)
        self._stores = stores_on(redis_client(settings), settings)
        self._submitter = Submitter(self._app, settings, self._stores)
        self._chains = ImageChains(self._stores.specs, settings)

    def __repr__(self) -> str:
        return f"BuildClient(settings={self._settings!r})"

    @property
    def redis(self):
        """The Redis connection (records, logs, metrics) this client uses."""
        return self._stores.redis

    @property
    def stores(self) -> Stores:
        return self._stores

    @_translated
    def submit(self, spec: ImageSpec | Mapping[str, Any], *, force: bool = False) -> BuildResult:
        """Validate, compute the target, record it Pending and enqueue; raises before queueing on bad input."""
        return self._submitter.submit(spec if isinstance(spec, ImageSpec) else parse_spec(spec), force=force)

    @_translated
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

    # -- stored specs ----------------------------------------------------------------------------------------
    @_translated
    def apply(self, spec: ImageSpec | Mapping[str, Any]) -> tuple[StoredSpec, BuildResult | None]:
        """Create or update a stored spec; a new spec, or an edit that changes its tag, is built at once."""
        spec = spec if isinstance(spec, ImageSpec) else parse_spec(spec)
        resolve_target(spec, self._settings)  # refuse before storing what could never be built
        stored, changed = self._stores.specs.apply(spec, check=self._chains.refuse_cycle)
        return stored, self._submitter.submit_stored(stored, Trigger.SPEC_CHANGED) if changed else None

    @_translated
    def build(self, name: str, *, force: bool = False, trigger: Trigger = Trigger.MANUAL) -> BuildResult:
        """Build a stored spec now."""
        return self._submitter.submit_stored(self._stores.specs.get(name), trigger, force=force)

    @_translated
    def specs(self) -> list[StoredSpec]:
        return self._stores.specs.all()

    @_translated
    def spec_page(self, *, offset: int = 0, limit: int = 100, contains: str = "") -> SpecPage:
        """A page of stored specs in name order, each with its newest build and its schedule."""
        names, total = self._stores.specs.page(offset, limit, contains)
        schedules = self._stores.schedules.of(names)
        items = [SpecListing(**stored.model_dump(), last_build=last, schedule=schedules.get(stored.spec.name))
                 for stored, last in self._stores.specs.with_last_builds(names)]
        return SpecPage(items=items, total=total, offset=offset, limit=limit)

    @_translated
    def spec(self, name: str) -> StoredSpec:
        return self._stores.specs.get(name)

    @_translated
    def spec_detail(self, name: str) -> SpecDetail:
        """The stored spec, with the stored spec it is built on and those built on it."""
        stored = self._stores.specs.get(name)
        return SpecDetail(**stored.model_dump(), upstream=self._chains.upstream(stored.spec),
                          downstream=self._chains.downstream(name))

    @_translated
    def bases_pushed(self, pushed: list[ImageReference]) -> None:
        """Queue the check of the stored specs built on these pushed tags (a registry's webhook said so): one
        check, of at most MAX_PUSHED_PER_TASK tags (InvalidRequest past it)."""
        if len(pushed) > MAX_PUSHED_PER_TASK:
            raise InvalidRequest(f"{len(pushed)} pushed tags: one check takes at most {MAX_PUSHED_PER_TASK}")
        send_pushed(self._app, [str(reference) for reference in pushed], Trigger.BASE_PUSHED)

    @_translated
    def webhook_out_of_scope(self, pushes: int) -> None:
        """Count pushes a webhook named on registries its token does not speak for (ignored)."""
        self._stores.metrics.webhook_ignored(OUT_OF_SCOPE, pushes)

    @_translated
    def delete_spec(self, name: str) -> None:
        """Delete the spec, its history, its schedule and what triggers noted of it."""
        self._stores.specs.delete(name)
        self._stores.schedules.remove(name)
        self._stores.triggers.forget(name)

    # -- schedules -------------------------------------------------------------------------------------------
    @_translated
    def set_schedule(self, name: str, *, cron: str | None = None, every_s: int | None = None, tz: str = "UTC",
                     policy: str = Policy.ON_BASE_CHANGE.value) -> Schedule:
        """Schedule rebuilds of a stored spec: by cron in a time zone, or every `every_s` seconds."""
        self._stores.specs.get(name)
        return self._stores.schedules.set(parse_schedule(name, cron=cron, every_s=every_s, tz=tz, policy=policy))

    @_translated
    def schedules(self) -> list[Schedule]:
        return self._stores.schedules.all()

    @_translated
    def schedule(self, name: str) -> Schedule:
        return self._stores.schedules.get(name)

    @_translated
    def find_schedule(self, name: str) -> Schedule | None:
        return self._stores.schedules.find(name)

    @_translated
    def remove_schedule(self, name: str) -> None:
        self._stores.schedules.get(name)
        self._stores.schedules.remove(name)

    @_translated
    def enable_schedule(self, name: str) -> Schedule:
        """Resume a schedule that disabled itself after repeated failures."""
        return self._stores.schedules.enable(name)

    @_translated
    def disable_schedule(self, name: str) -> Schedule:
        """Stop a schedule firing until it is enabled again."""
        return self._stores.schedules.disable(name, "disabled by hand; enable it to resume")

    @_translated
    def history(self, name: str) -> list[HistoryEntry]:
        """The spec's kept builds, newest first (UnknownSpec if there is no such spec)."""
        self._stores.specs.get(name)
        return self._stores.specs.history(name)

    @_translated
    def status(self, build_id: str) -> BuildResult:
        """The build's current record; UnknownBuild for an id nobody submitted."""
        return self._stores.builds.get(build_id)

    @_translated
    def recent_builds(self, count: int, phase: BuildPhase | None = None) -> list[BuildListing]:
        """The newest builds (of the last RECENT_BUILDS_KEPT submitted), in `phase` only if given."""
        results = [r for r in self._stores.builds.recent(count if phase is None else RECENT_BUILDS_KEPT)
                   if phase is None or r.phase is phase][:count]
        entries = self._stores.specs.entries([r.id for r in results])
        return [_listing(result, entries.get(result.id)) for result in results]

    @_translated
    def listing(self, build_id: str) -> BuildListing:
        """The build, the stored spec it was for, and whether it can be built again (ended, spec still known)."""
        result = self.status(build_id)
        entry = self._stores.specs.entries([build_id]).get(build_id)
        known = entry is not None or self._stores.builds.message(build_id) is not None
        return _listing(result, entry).model_copy(update={"rebuildable": result.phase.is_final and known})

    @_translated
    def rebuild(self, build_id: str) -> BuildResult:
        """Build again what an ended build built: its stored spec as it is now, or the same ad-hoc spec."""
        entry = self._stores.specs.entries([build_id]).get(build_id)
        if entry is not None:
            return self.build(entry.name, force=True)
        message = self._stores.builds.message(build_id)
        if message is None:
            raise unknown_build(build_id)
        return self.submit(message["spec"], force=True)

    @_translated
    def operations(self) -> Operations:
        """Workers and what each runs, the queue, and the last 24 hours' builds by phase and duration."""
        now = time.time()
        running = self._stores.builds.running()
        current: dict[str, list[str]] = {}
        for result in running:  # a worker runs as many builds at once as its concurrency
            current.setdefault(result.worker or "", []).append(result.id)
        workers = [WorkerListing(name=name, last_seen=datetime.fromtimestamp(seen, timezone.utc),
                                 current_builds=current.get(name, [])) for name, seen in self._stores.metrics.workers()]
        hours = [HourOfBuilds(start=datetime.fromtimestamp(start, timezone.utc), phases=phases)
                 for start, phases in self._stores.metrics.hourly_phases(now)]
        durations = self._stores.metrics.durations_since(now - DAY_S)
        return Operations(workers=workers, queue_depth=queue_depth(self.redis), running=len(running),
                          hours=hours, p50_duration_s=percentile(durations, 50),
                          p95_duration_s=percentile(durations, 95))

    @_translated
    def wait(self, build_id: str, *, timeout_s: float | None = None) -> BuildResult:
        """Block until the build has ended and everything about its end is in place (history, schedule, metrics,
        the log's end marker); TimeoutError after `timeout_s`."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        closed = False
        while not self._over(result := self.status(build_id), closed):
            remaining_s = WAIT_SLICE_S if deadline is None else deadline - time.monotonic()
            if remaining_s <= 0:
                raise TimeoutError(f"build {build_id} still {result.phase.value} after {timeout_s} s")
            # Wakes at the log's end marker; the record is re-read each slice in case the marker never comes.
            closed = self._stores.log.wait_closed(build_id, min(remaining_s, WAIT_SLICE_S))
        return result

    def _over(self, result: BuildResult, closed: bool = False) -> bool:
        """Ended, with its log's end marker written (seen already if `closed`) or long enough ago."""
        if not result.phase.is_final:
            return False
        if closed:
            return True
        ended_long_ago = result.finished_at and utcnow() - result.finished_at > timedelta(seconds=LOG_END_GRACE_S)
        return bool(ended_long_ago) or self._stores.log.is_closed(result.id)

    @_translated
    def logs(self, build_id: str, *, follow: bool = False) -> Iterator[str]:
        """The build's log lines; with `follow`, new lines as they come until the build ends."""
        self.status(build_id)
        lines = self._stores.log.lines(build_id, follow=follow, is_over=lambda: self.status(build_id).phase.is_final)
        return _translated_lines(lines)

    def close(self) -> None:
        self._stores.close()
        self._app.close()

    def __enter__(self) -> BuildClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _listing(result: BuildResult, entry: HistoryEntry | None) -> BuildListing:
    if entry is None:
        return BuildListing(result=result)
    return BuildListing(result=result, spec_name=entry.name, trigger=entry.trigger)


def _translated_lines(lines: Iterator[str]) -> Iterator[str]:
    with store_errors():
        yield from lines
