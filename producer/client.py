"""The Python client: submit specs, read status and logs, wait for results. Never imports docker."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import Any

from config.celery_config import redis_client
from config.settings import Settings
from worker.app import create_app
from worker.coordination import Coordinator
from worker.errors import AlreadyFinished
from worker.logs import BuildLog
from worker.records import BuildRecords, unknown_build
from worker.result import BuildResult, utcnow
from worker.schedules import Policy, Schedule, parse_schedule
from worker.scheduling import spec_and_schedule_stores
from worker.spec import ImageSpec, parse_spec
from worker.specstore import HistoryEntry, StoredSpec, Trigger
from worker.states import BuildPhase
from worker.submission import Submitter
from worker.tagging import resolve_target

WAIT_SLICE_S = 5.0


class BuildClient:
    """Submits builds to the `builds` queue and reads their records and logs from Redis."""

    def __init__(self, settings: Settings):
        self._settings = settings
        self._app = create_app(settings)
        self._redis = redis_client(settings)
        self._records = BuildRecords(self._redis, expires_s=settings.result_expires_s)
        self._log = BuildLog(self._redis, max_lines=settings.log_max_lines, retention_s=settings.log_retention_s)
        self._coordinator = Coordinator(self._redis, expires_s=settings.result_expires_s)
        self._specs, self._schedules = spec_and_schedule_stores(self._redis, settings)
        self._submitter = Submitter(self._app, settings, self._coordinator, self._records, self._specs)

    def __repr__(self) -> str:
        return f"BuildClient(settings={self._settings!r})"

    @property
    def redis(self):
        """The Redis connection (records, logs, metrics) this client uses."""
        return self._redis

    def submit(self, spec: ImageSpec | Mapping[str, Any], *, force: bool = False) -> BuildResult:
        """Validate, compute the target, record it Pending and enqueue; raises before queueing on bad input."""
        return self._submitter.submit(spec if isinstance(spec, ImageSpec) else parse_spec(spec), force=force)

    def cancel(self, build_id: str) -> BuildResult:
        """Cancel: a queued build never starts, a running one stops and pushes nothing.

        Raises AlreadyFinished (changing nothing) for a build that has ended, UnknownBuild for an unknown id."""
        before = self._coordinator.cancel(build_id, utcnow().isoformat())
        if not before:
            raise unknown_build(build_id)
        if BuildPhase(before).is_final:
            raise AlreadyFinished(f"build {build_id} already ended {before}: nothing to cancel, nothing changed")
        result = self.status(build_id)
        if before == BuildPhase.PENDING.value:
            self._log.close(build_id, BuildPhase.CANCELLED.value)
            self._specs.build_changed(result)
        return result

    # -- stored specs ----------------------------------------------------------------------------------------
    def apply(self, spec: ImageSpec | Mapping[str, Any]) -> tuple[StoredSpec, BuildResult | None]:
        """Create or update a stored spec; a new spec, or an edit that changes its tag, is built at once."""
        spec = spec if isinstance(spec, ImageSpec) else parse_spec(spec)
        resolve_target(spec, self._settings)  # refuse before storing what could never be built
        stored, changed = self._specs.apply(spec)
        return stored, self._submitter.submit_stored(stored, Trigger.SPEC_CHANGED) if changed else None

    def build(self, name: str, *, force: bool = False, trigger: Trigger = Trigger.MANUAL) -> BuildResult:
        """Build a stored spec now."""
        return self._submitter.submit_stored(self._specs.get(name), trigger, force=force)

    def specs(self) -> list[StoredSpec]:
        return self._specs.all()

    def spec(self, name: str) -> StoredSpec:
        return self._specs.get(name)

    def delete_spec(self, name: str) -> None:
        """Delete the spec, its history and its schedule."""
        self._specs.delete(name)
        self._schedules.remove(name)

    # -- schedules -------------------------------------------------------------------------------------------
    def set_schedule(self, name: str, *, cron: str | None = None, every_s: int | None = None, tz: str = "UTC",
                     policy: str = Policy.ON_BASE_CHANGE.value) -> Schedule:
        """Schedule rebuilds of a stored spec: by cron in a time zone, or every `every_s` seconds."""
        self._specs.get(name)
        return self._schedules.set(parse_schedule(name, cron=cron, every_s=every_s, tz=tz, policy=policy))

    def schedules(self) -> list[Schedule]:
        return self._schedules.all()

    def schedule(self, name: str) -> Schedule:
        return self._schedules.get(name)

    def remove_schedule(self, name: str) -> None:
        self._schedules.get(name)
        self._schedules.remove(name)

    def enable_schedule(self, name: str) -> Schedule:
        """Resume a schedule that disabled itself after repeated failures."""
        return self._schedules.enable(name)

    def history(self, name: str) -> list[HistoryEntry]:
        """The spec's kept builds, newest first (UnknownSpec if there is no such spec)."""
        self._specs.get(name)
        return self._specs.history(name)

    def status(self, build_id: str) -> BuildResult:
        """The build's current record; UnknownBuild for an id nobody submitted."""
        return self._records.get(build_id)

    def wait(self, build_id: str, *, timeout_s: float | None = None) -> BuildResult:
        """Block until the build reaches a final phase; TimeoutError after `timeout_s`."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not (result := self.status(build_id)).phase.is_final:
            remaining_s = WAIT_SLICE_S if deadline is None else deadline - time.monotonic()
            if remaining_s <= 0:
                raise TimeoutError(f"build {build_id} still {result.phase.value} after {timeout_s} s")
            # Wakes at the log's end marker; the record is re-read each slice in case the marker never comes.
            self._log.wait_closed(build_id, min(remaining_s, WAIT_SLICE_S))
        return result

    def logs(self, build_id: str, *, follow: bool = False) -> Iterator[str]:
        """The build's log lines; with `follow`, new lines as they come until the build ends."""
        self.status(build_id)
        return self._log.lines(build_id, follow=follow, is_over=lambda: self.status(build_id).phase.is_final)

    def close(self) -> None:
        self._redis.close()
        self._app.close()

    def __enter__(self) -> BuildClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
