"""Rebuilding stored specs whose base was pushed: a registry's webhook said so, or the stored spec that builds
that base just succeeded (an image chain). A push is only a hint: each matching spec's base is checked by a
manifest HEAD with its pull secret, and rebuilt only when the digest differs from its last success's, so
replayed and duplicate notifications build nothing."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable

from celery import Celery

from config.celery_config import BASES_PUSHED_TASK
from config.settings import Settings
from worker.credentials import pull_credentials
from worker.errors import ImageBuilderError, RetryableError
from worker.reference import ImageReference, parse_reference
from worker.registry import RegistrySessions
from worker.specstore import HistoryEntry, StoredSpec, Trigger
from worker.states import BuildPhase
from worker.stores import Stores
from worker.submission import MAX_PUSHED_PER_TASK, Submitter, send_pushed

logger = logging.getLogger(__name__)

PUSH_TRIGGERS = frozenset({Trigger.BASE_PUSHED, Trigger.BASE_REBUILT})
UNCHANGED = "unchanged"
CHECK_FAILED = "check-failed"
RUNNING_ALREADY = "running-already"  # checked again once that build may have ended (RECHECK_AFTER_S)
RECHECK_AFTER_S = 15


class BaseDigests:
    """One manifest HEAD per base and pull secret for as long as it lives: the digest, or the error it met."""

    def __init__(self, settings: Settings, registries: RegistrySessions):
        self._settings = settings
        self._registries = registries
        self._digests: dict[tuple[str, str | None], str | None | ImageBuilderError] = {}

    def changed(self, stored: StoredSpec, last: HistoryEntry | None) -> bool:
        """Whether the base's digest differs from the one the last success was built on (or none is known)."""
        return last is None or not last.base_digest or last.base_digest != self.of(stored)

    def of(self, stored: StoredSpec) -> str | None:
        key = (stored.spec.base_image, stored.spec.pull_secret)
        if key not in self._digests:
            try:
                self._digests[key] = self._head(stored)
            except ImageBuilderError as e:
                self._digests[key] = e
        if isinstance(found := self._digests[key], ImageBuilderError):
            raise found
        return found

    def _head(self, stored: StoredSpec) -> str | None:
        base = parse_reference(stored.spec.base_image)
        credentials = pull_credentials(self._settings, stored.spec.pull_secret, base.registry)
        return self._registries.client(base.registry, credentials).manifest_digest(base)


class BaseWatch:
    """Checks the stored specs built on pushed tags, and rebuilds (forced: same tag) those whose base changed."""

    def __init__(self, app: Celery, settings: Settings, stores: Stores, registries: RegistrySessions):
        self._settings = settings
        self._registries = registries
        self._specs = stores.specs
        self._submitter = Submitter(app, settings, stores)
        # Bases to check again (RECHECK_AFTER_S): those of specs whose build was already running, which may have
        # pulled the base before this push (a build of a target never runs twice at once), and those whose check
        # met a registry that was away.
        self.recheck: list[str] = []

    def run(self, pushed: list[ImageReference], trigger: Trigger) -> dict[str, int]:
        """How each matching spec ended: rebuilt (the trigger's name), unchanged, running-already or
        check-failed."""
        names = self._specs.based_on(pushed)
        digests = BaseDigests(self._settings, self._registries)
        found = self._specs.with_last_success(names)
        return dict(Counter(self._check(stored, last, digests, trigger) for stored, last in found.values()))

    def _check(self, stored: StoredSpec, last: HistoryEntry | None, digests: BaseDigests, trigger: Trigger) -> str:
        name = stored.spec.name
        try:
            if not digests.changed(stored, last):
                return UNCHANGED
            build = self._submitter.submit_stored(stored, trigger, force=True)  # attaches if it is building now
        except Exception as e:  # one spec's registry failing must not hold up the others
            expected = isinstance(e, ImageBuilderError)
            logger.warning("%s of %s: check failed: %s", trigger.value, name,
                           e.message if expected else type(e).__name__, exc_info=not expected)
            if isinstance(e, RetryableError):  # its registry or Redis away for now: look again later
                self.recheck.append(stored.spec.base_image)
            return CHECK_FAILED
        if build.phase is BuildPhase.RUNNING:
            self.recheck.append(stored.spec.base_image)
            logger.info("%s: %s is being built already (%s); checking again after it", trigger.value, name, build.id)
            return RUNNING_ALREADY
        logger.info("%s: %s builds as %s", trigger.value, name, build.id)
        return trigger.value


def validated_push(pushed: object, trigger: object) -> tuple[list[ImageReference], Trigger] | None:
    """The task's arguments as sent by this service, parsed; or None (logged) for a message nothing here sent."""
    if (not isinstance(pushed, list) or len(pushed) > MAX_PUSHED_PER_TASK
            or not all(isinstance(item, str) for item in pushed) or trigger not in {t.value for t in PUSH_TRIGGERS}):
        logger.warning("%s: ignored a message with invalid arguments", BASES_PUSHED_TASK)
        return None
    try:
        return [parse_reference(item) for item in pushed], Trigger(trigger)
    except ValueError:
        logger.warning("%s: ignored a message with an invalid image reference", BASES_PUSHED_TASK)
        return None


def announcer(app: Celery) -> Callable[[str], None]:
    """What a worker's Lifecycle calls when a stored spec's build pushed a new image that specs are built on:
    queue their check (trigger base-rebuilt), so children rebuild after their parent, each once per change."""
    return lambda image: send_pushed(app, [image], Trigger.BASE_REBUILT)
