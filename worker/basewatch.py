"""Rebuilding stored specs whose base was pushed: a registry's webhook said so, or the stored spec that builds
that base just succeeded (an image chain). A push is only a hint: each matching spec's base is checked by a
manifest HEAD with its pull secret, and rebuilt only when the digest differs from the one its last success was
built on, and only once per digest by triggers (a claim in the trigger store), so replayed and duplicate
notifications build nothing, and a trigger never retries a failure on the same base."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable

from celery import Celery

from config.celery_config import BASES_PUSHED_TASK
from config.settings import Settings
from core.errors import FatalError, ImageBuilderError, RetryableError, StoreUnavailable
from core.reference import ImageReference, is_digest, parse_reference
from core.registry.client import RegistrySessions
from core.registry.credentials import pull_credentials, push_credentials
from core.stored import HistoryEntry, StoredSpec, Trigger
from core.stores.builds import BuildState
from core.stores.connection import store_errors
from core.stores.wiring import Stores
from core.submission import MAX_PUSHED_PER_TASK, Submitter, send_pushed
from core.tagging import resolve_target
from worker.dockerfile import BASE_DIGEST_LABEL

logger = logging.getLogger(__name__)

PUSH_TRIGGERS = frozenset({Trigger.BASE_PUSHED, Trigger.BASE_REBUILT})
UNCHANGED = "unchanged"
TRIGGERED_ALREADY = "triggered-already"  # a trigger queued this spec on this digest before: never again
BASE_MISSING = "base-missing"  # the pushed tag is not there (deleted since): nothing to build on
CHECK_FAILED = "check-failed"
RUNNING_ALREADY = "running-already"  # queued or running: checked again once it may have ended (RECHECK_AFTER_S)
RECHECK_AFTER_S = 15
RECHECK_HOLD_S = 10 * RECHECK_AFTER_S  # a pending recheck's hold on its base outlives a late start of its task


def recheck_limit(settings: Settings) -> int:
    """How many times a base is checked again: for as long as a build can run (its hard time limit)."""
    return settings.hard_time_limit_s // RECHECK_AFTER_S + 1


class BaseDigests:
    """The digest each base has now (one manifest HEAD per base and pull secret for as long as this lives), and
    the one each spec's last success was built on."""

    def __init__(self, settings: Settings, registries: RegistrySessions, builds: BuildState):
        self._settings = settings
        self._registries = registries
        self._builds = builds
        self._digests: dict[tuple[str, str | None], str | None | ImageBuilderError] = {}

    def changed(self, stored: StoredSpec, last: HistoryEntry | None) -> bool:
        """Whether the base's digest differs from the one the last success was built on (or none is known)."""
        built_on = self.built_on(stored, last)
        return built_on is None or built_on != self.of(stored)

    def built_on(self, stored: StoredSpec, last: HistoryEntry | None) -> str | None:
        """The base digest the last success of the spec's current tag was built on (None: unknown). A skipped
        success did not pull its base, but its image says (a label): that is read once, from the registry, and
        kept in the history entry ("" where the image says nothing), so it is never read again."""
        if last is None or last.tag != stored.tag:
            return None
        if last.base_digest is not None:
            return last.base_digest or None
        digest = self._labelled_base(stored)
        self._builds.note_base_digest(last.id, digest or "")
        return digest

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

    def _labelled_base(self, stored: StoredSpec) -> str | None:
        """The base digest the spec's image carries in its label; None if the image, its config or the label is not
        there or cannot be read (a registry that is away for now raises: the check is tried again)."""
        target = resolve_target(stored.spec, self._settings)
        client = self._registries.client(target.registry, push_credentials(self._settings))
        try:
            digest = client.image_labels(target).get(BASE_DIGEST_LABEL, "")
        except FatalError as e:
            logger.info("the base digest of %s is unknown: %s", target, e.message)
            return None
        return digest if is_digest(digest) else None


class BaseWatch:
    """Checks the stored specs built on pushed tags, and rebuilds (forced: same tag) those whose base changed."""

    def __init__(self, app: Celery, settings: Settings, stores: Stores, registries: RegistrySessions):
        self._settings = settings
        self._registries = registries
        self._specs = stores.specs
        self._builds = stores.builds
        self._triggers = stores.triggers
        self._submitter = Submitter(app, settings, stores, answering=False)
        # Bases to check again (RECHECK_AFTER_S), normalised: those of specs whose build was already running,
        # which may have pulled the base before this push (a build of a target never runs twice at once), and
        # those whose check met a registry that was away.
        self.recheck: list[str] = []

    def run(self, pushed: list[ImageReference], trigger: Trigger) -> dict[str, int]:
        """How each matching spec ended: rebuilt (the trigger's name), unchanged, triggered-already,
        base-missing, running-already or check-failed. With Redis away, every pushed base is to be checked
        again."""
        try:
            with store_errors():
                return self._run(pushed, trigger)
        except StoreUnavailable as e:
            logger.warning("%s: %s", trigger.value, e.message)
            self.recheck = [str(reference) for reference in pushed]
            return {CHECK_FAILED: len(pushed)}

    def _run(self, pushed: list[ImageReference], trigger: Trigger) -> dict[str, int]:
        names = self._specs.based_on(pushed)
        digests = BaseDigests(self._settings, self._registries, self._builds)
        found, marks = self._specs.with_last_success(names), self._triggers.marks(names)
        return dict(Counter(self._check(stored, last, marks.get(name), digests, trigger)
                            for name, (stored, last) in found.items()))

    def _check(self, stored: StoredSpec, last: HistoryEntry | None, mark: str | None, digests: BaseDigests,
               trigger: Trigger) -> str:
        try:
            with store_errors():
                return self._decide(stored, last, mark, digests, trigger)
        except Exception as e:  # one spec's registry failing must not hold up the others
            expected = isinstance(e, ImageBuilderError)
            logger.warning("%s of %s: check failed: %s", trigger.value, stored.spec.name,
                           e.message if expected else type(e).__name__, exc_info=not expected)
            if isinstance(e, RetryableError):  # its registry or Redis away for now: look again later
                self._recheck(stored)
            return CHECK_FAILED

    def _decide(self, stored: StoredSpec, last: HistoryEntry | None, mark: str | None, digests: BaseDigests,
                trigger: Trigger) -> str:
        """HEAD the base; then, cheapest first: was this tag queued on it by a trigger, was it built on it, and
        if neither, claim it and queue its build."""
        current = digests.of(stored)
        if current is None:
            return BASE_MISSING
        wanted = f"{stored.tag}@{current}"
        if mark == wanted:
            return TRIGGERED_ALREADY
        if digests.built_on(stored, last) == current:
            return UNCHANGED
        previous = self._triggers.claim(stored.spec.name, wanted)
        if previous is None:  # another check claimed it just now
            return TRIGGERED_ALREADY
        return self._rebuild(stored, trigger, wanted, previous)

    def _rebuild(self, stored: StoredSpec, trigger: Trigger, wanted: str, previous: str) -> str:
        """Queue the build; a claim stands only for a build this check queued. One it attached to (queued or
        running before, maybe not forced, maybe on the old base) is not the trigger's: look again after it."""
        name = stored.spec.name
        try:
            submission = self._submitter.submission_of_stored(stored, trigger, force=True)
        except Exception:
            self._triggers.unclaim(name, wanted, previous)
            raise
        build = submission.build
        if not submission.queued:
            self._triggers.unclaim(name, wanted, previous)
            self._recheck(stored)
            logger.info("%s: %s is queued or building already (%s); checking again after it", trigger.value, name,
                        build.id)
            return RUNNING_ALREADY
        logger.info("%s: %s builds as %s on %s", trigger.value, name, build.id, wanted)
        return trigger.value

    def _recheck(self, stored: StoredSpec) -> None:
        base = str(parse_reference(stored.spec.base_image))
        if base not in self.recheck:
            self.recheck.append(base)


    def follow_up(self, holder: str, checked: list[str]) -> list[str]:
        """The bases task `holder` is to check again: those it needs to whose one pending recheck is its own
        (taken now, or held since an earlier try); another task's pending recheck looks at the rest. It lets go
        of the bases it checked and no longer needs to. With Redis away, every base it needs to (unheld)."""
        try:
            with store_errors():
                held = self._triggers.hold_rechecks(self.recheck, holder, RECHECK_HOLD_S)
                self._triggers.release_rechecks([base for base in checked if base not in held], holder)
        except StoreUnavailable:
            return self.recheck
        return held

    def give_up(self, holder: str, bases: list[str]) -> None:
        """Stop checking these bases again (the bound is reached): let go of their rechecks."""
        with store_errors():
            self._triggers.release_rechecks(bases, holder)


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
