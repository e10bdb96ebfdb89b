"""The scheduling pass: celery-redbeat sends it every IMAGEBUILDER_SCHEDULE_PASS_S from the one beat holding the
lock; it claims the schedules that are due and applies each one's policy (HEAD only: never a manifest GET)."""

from __future__ import annotations

import logging
from collections import Counter

import redis
from celery import Celery

from config.settings import Settings
from worker.coordination import Coordinator
from worker.credentials import pull_credentials
from worker.errors import ImageBuilderError
from worker.records import BuildRecords
from worker.reference import parse_reference
from worker.registry import RegistryClient
from worker.schedules import Policy, Schedule, ScheduleStore
from worker.specstore import SpecStore, StoredSpec, Trigger
from worker.submission import Submitter

logger = logging.getLogger(__name__)

SCHEDULE_PASS_TASK = "imagebuilder.schedule_pass"
SCHEDULE_PASS_ENTRY = "imagebuilder-schedule-pass"


def spec_and_schedule_stores(client: redis.Redis, settings: Settings) -> tuple[SpecStore, ScheduleStore]:
    return (SpecStore(client, keep_succeeded=settings.history_keep_succeeded,
                      keep_failed=settings.history_keep_failed),
            ScheduleStore(client, disable_after=settings.schedule_disable_after))


class SchedulingPass:
    """Decides every due schedule: rebuild (forced, so the same tag is built again), or only note the check."""

    def __init__(self, app: Celery, settings: Settings, client: redis.Redis):
        self._settings = settings
        self._specs, self._schedules = spec_and_schedule_stores(client, settings)
        self._submitter = Submitter(app, settings, Coordinator(client, expires_s=settings.result_expires_s),
                                    BuildRecords(client, expires_s=settings.result_expires_s), self._specs)
        self._digests: dict[tuple[str, str | None], str | None] = {}  # one HEAD per base and secret per pass

    def run(self, now: float | None = None) -> dict[str, int]:
        """One pass; how many due schedules ended which way."""
        outcomes = Counter()
        for schedule, _due in self._schedules.claim_due(now):
            try:
                outcomes[self._decide(schedule)] += 1
            except ImageBuilderError as e:  # one unreachable registry must not hold up the other schedules
                logger.warning("schedule of %s: check failed: %s", schedule.name, e)
                outcomes["check-failed"] += 1
        return dict(outcomes)

    def _decide(self, schedule: Schedule) -> str:
        stored = self._specs.find(schedule.name)
        if stored is None:
            self._schedules.remove(schedule.name)
            return "spec-gone"
        if schedule.policy is Policy.ALWAYS:
            return self._build(stored, Trigger.SCHEDULE)
        last = self._specs.last_succeeded(schedule.name)
        if last is not None and last.base_digest and last.base_digest == self._base_digest(stored):
            self._schedules.checked(schedule.name, fired=False)
            return "unchanged"
        return self._build(stored, Trigger.BASE_CHANGED)

    def _build(self, stored: StoredSpec, trigger: Trigger) -> str:
        build = self._submitter.submit_stored(stored, trigger, force=True)  # attaches if it is building now
        self._schedules.checked(stored.spec.name, fired=True)
        logger.info("schedule of %s: %s build %s", stored.spec.name, trigger.value, build.id)
        return trigger.value

    def _base_digest(self, stored: StoredSpec) -> str | None:
        key = (stored.spec.base_image, stored.spec.pull_secret)
        if key not in self._digests:
            self._digests[key] = self._head_base(stored)
        return self._digests[key]

    def _head_base(self, stored: StoredSpec) -> str | None:
        base = parse_reference(stored.spec.base_image)
        credentials = pull_credentials(self._settings, stored.spec.pull_secret, base.registry)
        client = RegistryClient(base.registry, credentials, timeout_s=self._settings.registry_timeout_s,
                                insecure_registries=frozenset(self._settings.insecure_registries))
        return client.manifest_digest(base)
