"""The scheduling pass: celery-redbeat sends it every IMAGEBUILDER_SCHEDULE_PASS_S from the one beat holding the
lock; it claims the schedules that are due and applies each one's policy (HEAD only: never a manifest GET).

Each due schedule is decided on its own: whatever goes wrong with one (its registry answering HTML, timing
out, failing TLS) is recorded on that schedule, and the pass goes on with the others."""

from __future__ import annotations

import logging
from collections import Counter

from celery import Celery

from config.settings import Settings
from core.errors import ImageBuilderError
from core.registry.client import RegistrySessions
from core.schedule import Policy, Schedule
from core.stored import HistoryEntry, StoredSpec, Trigger
from core.stores.wiring import Stores
from core.submission import Submitter
from worker.basewatch import CHECK_FAILED, UNCHANGED, BaseDigests

logger = logging.getLogger(__name__)

PASS_BATCH = 500


class SchedulingPass:
    """Decides every due schedule: rebuild (forced, so the same tag is built again), or only note the check."""

    def __init__(self, app: Celery, settings: Settings, stores: Stores, registries: RegistrySessions):
        self._settings = settings
        self._registries = registries
        self._specs, self._schedules = stores.specs, stores.schedules
        self._submitter = Submitter(app, settings, stores, answering=False)
        self._builds = stores.builds
        self._digests = BaseDigests(settings, self._registries, self._builds)  # one HEAD per base and secret per pass

    def run(self, now: float | None = None) -> dict[str, int]:
        """One pass; how many due schedules ended which way. Due schedules are claimed, read and noted in
        batches of PASS_BATCH, a few round trips each; each is still decided on its own."""
        outcomes, self._digests = Counter(), BaseDigests(self._settings, self._registries, self._builds)
        due = self._schedules.due(now)
        for start in range(0, len(due), PASS_BATCH):
            outcomes.update(self._run_batch(due[start:start + PASS_BATCH], now))
        return dict(outcomes)

    def _run_batch(self, due: list[tuple[str, float]], now: float | None) -> Counter:
        claimed = self._schedules.claim(due, now)
        specs = self._specs.with_last_success([schedule.name for schedule in claimed])
        outcomes, unchanged = Counter(), []
        for schedule in claimed:
            outcome = self._tick(schedule, specs.get(schedule.name))
            outcomes[outcome] += 1
            if outcome == UNCHANGED:
                unchanged.append((schedule.name, False))
        self._schedules.checked(unchanged)
        return outcomes

    def _tick(self, schedule: Schedule, found: tuple[StoredSpec, HistoryEntry | None] | None) -> str:
        """Decide one claimed schedule; whatever its check meets is noted on it alone."""
        try:
            return self._decide(schedule, found)
        except Exception as e:  # whatever one spec's check meets must not hold up the other schedules
            expected = isinstance(e, ImageBuilderError)
            reason = e.message if expected else f"internal error: {type(e).__name__}"
            logger.warning("schedule of %s: check failed: %s", schedule.name, reason, exc_info=not expected)
            self._schedules.check_failed(schedule.name, reason)
            return CHECK_FAILED

    def _decide(self, schedule: Schedule, found: tuple[StoredSpec, HistoryEntry | None] | None) -> str:
        if found is None:
            self._schedules.remove(schedule.name)
            return "spec-gone"
        stored, last = found
        if schedule.policy is Policy.ALWAYS:
            return self._build(stored, Trigger.SCHEDULE, schedule)
        if not self._digests.changed(stored, last):
            return UNCHANGED
        return self._build(stored, Trigger.BASE_CHANGED, schedule)

    def _build(self, stored: StoredSpec, trigger: Trigger, schedule: Schedule) -> str:
        build = self._submitter.submit_stored(stored, trigger, force=True)  # attaches if it is building now
        self._schedules.checked([(stored.spec.name, True)])
        # the next due time this pass's claim set: two passes that fired one due time would log the same one
        logger.info("schedule of %s: %s build %s, next due %s", stored.spec.name, trigger.value, build.id,
                    schedule.next_due.isoformat() if schedule.next_due else "none")
        return trigger.value
