"""The multi-platform half of a build's delivery: read the base's index, send each platform's part to that
platform's queue, build here the parts no worker has taken (of the platforms this worker builds), wait for the
rest, and tag the target with an index of their images. Each part's phase, step, digest and worker are on the
build's record (`platforms`); a part whose worker stopped beating is taken back and sent again."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass

from celery import Celery

from config.celery_config import PART_TASK_NAME
from config.settings import Settings
from core.errors import (
    BaseLacksPlatform,
    BuildCancelled,
    PartFailed,
    PlatformUnavailable,
    PushFailed,
)
from core.phases import BuildPhase
from core.platforms import Platform
from core.reference import ImageReference, parse_reference
from core.registry.client import RegistryClient, RegistrySessions
from core.registry.credentials import pull_credentials
from core.result import PlatformPart
from core.spec import ImageSpec
from core.stores.parts import PlatformParts
from worker.parts import PartOrder, PartRunner
from worker.progress import Progress
from worker.watch import Watch, backoff_s

WAIT_POLL_S = 0.5
HERE_STOP_S = 30  # a part built here, once stopped, ends within a heartbeat and its build's kill


@dataclass(frozen=True)
class PlatformWiring:
    """What every multi-platform build of a worker process shares: its settings, registry sessions, the parts
    store, its runner of parts, the platforms it builds, and the app it sends parts with."""

    settings: Settings
    registries: RegistrySessions
    parts: PlatformParts
    runner: PartRunner
    builds_here: frozenset[Platform]
    app: Celery


class PlatformBuild:
    """One multi-platform build, from sending its parts to tagging its index."""

    def __init__(self, wiring: PlatformWiring, progress: Progress, build_id: str, spec: ImageSpec,
                 target: ImageReference, force: bool):
        self._wiring = wiring
        self._progress = progress
        self._id, self._spec, self._target, self._force = build_id, spec, target, force
        self._orders: dict[str, PartOrder] = {}
        self._pending_since: dict[str, float] = {}
        self._not_before: dict[str, float] = {}  # a part given back after a transient failure waits its backoff
        self._shown: dict[str, PlatformPart] | None = None
        self._here: threading.Thread | None = None  # the part this delivery builds itself, beside its waiting

    def send(self) -> str:
        """Read the base's index (BaseLacksPlatform for a platform it lacks), then send each part no earlier
        delivery finished or has under way; the base tag's digest."""
        base = parse_reference(self._spec.base_image)
        credentials = pull_credentials(self._wiring.settings, self._spec.pull_secret, base.registry)
        found = self._wiring.registries.client(base.registry, credentials).platform_images(base)
        deadline = time.time() + self._wiring.settings.build_timeout_s
        self._orders = {p.value: PartOrder(self._id, p, self._spec, self._target, _base_for(p, found.images, base),
                                           found.digest, self._force, deadline) for p in self._spec.platforms}
        parts = self._wiring.parts.open(self._id, list(self._orders))
        for name, part in parts.items():
            if part.phase is BuildPhase.PENDING:
                self._send(self._orders[name])
        self._show(parts)
        return found.digest

    def wait(self, watch: Watch) -> None:
        """Until every part has succeeded: build here what no one took, take back what a lost worker held; a
        failed part fails the build (PartFailed naming its platform and step)."""
        while True:
            watch.check()
            parts = self._wiring.parts.read(self._id)
            self._show(parts)
            self._refuse_failed(parts)
            if all(part.phase is BuildPhase.SUCCEEDED for part in parts.values()):
                if self._here is not None:
                    self._here.join(HERE_STOP_S)  # it has ended its part: only its last words are left
                return
            self._take_back_lost(parts)
            self._build_one_here(parts)
            self._refuse_unclaimed(parts)
            time.sleep(WAIT_POLL_S)

    def push_index(self, registry: RegistryClient) -> str:
        """Tag the target with an index of the parts' images, each checked to be the one its part pushed."""
        parts = self._wiring.parts.read(self._id)
        images = {order.platform: registry.image_descriptor(order.part_target) for order in self._orders.values()}
        for platform, image in images.items():
            if image.digest != parts[platform.value].digest:
                raise PushFailed(f"{platform.value}: {self._orders[platform.value].part_target} is no longer the "
                                 f"image its part pushed ({parts[platform.value].digest})")
        digest = registry.put_index(self._target, images)
        self._progress.line(f"{self._target}: an image index of {', '.join(self._orders)}, digest {digest}")
        return digest

    def stop(self) -> None:
        """Stop every part that has not ended (the build failed, was cancelled or timed out), as its record shows."""
        self._wiring.parts.stop(self._id)
        if self._here is not None:  # it sees its part stopped at its next heartbeat, and kills its build
            self._here.join(HERE_STOP_S)
        self._show(self._wiring.parts.read(self._id))

    def _send(self, order: PartOrder, delay_s: float = 0.0) -> None:
        self._pending_since[order.platform.value] = time.monotonic()
        self._not_before[order.platform.value] = time.monotonic() + delay_s
        self._wiring.app.send_task(PART_TASK_NAME, kwargs=order.to_message(), queue=order.platform.queue,
                                   task_id=f"{self._id}:{order.platform.slug}:{uuid.uuid4().hex[:8]}",
                                   countdown=delay_s or None)

    def _show(self, parts: dict[str, PlatformPart]) -> None:
        if parts and parts != self._shown:
            self._progress.show_parts(parts)
            self._shown = parts

    def _refuse_failed(self, parts: dict[str, PlatformPart]) -> None:
        attempts = self._wiring.settings.max_attempts
        for name, part in parts.items():
            if part.phase is BuildPhase.CANCELLED:  # only a cancel of the build stops a part it has not stopped
                raise BuildCancelled("cancelled on request")
            if part.phase is BuildPhase.FAILED:
                self._progress.at_step(part.step)
                raise PartFailed(f"{name}: {part.error}")
            if part.attempts > attempts and part.phase is BuildPhase.PENDING:
                raise PartFailed(f"{name}: gave up after {part.attempts} attempts (each worker was lost or failed "
                                 "for a reason that may pass)")

    def _take_back_lost(self, parts: dict[str, PlatformPart]) -> None:
        for name, part in parts.items():
            if part.phase is BuildPhase.RUNNING and self._wiring.parts.take_back(self._id, name):
                self._progress.line(f"{name}: its worker ({part.worker}) was lost; sending the part again")
                self._send(self._orders[name])
            elif part.phase is BuildPhase.PENDING and name not in self._pending_since:  # given back: try later
                settings = self._wiring.settings
                self._send(self._orders[name], backoff_s(part.attempts, base_s=settings.retry_backoff_s,
                                                         cap_s=settings.retry_backoff_max_s))

    def _build_one_here(self, parts: dict[str, PlatformPart]) -> None:
        """Build, beside the waiting, a part no worker has taken, if this worker builds its platform: so a build
        never waits for a slot its own delivery holds. One at a time; the record shows every part meanwhile."""
        if self._here is not None and self._here.is_alive():
            return
        for name, part in parts.items():
            order = self._orders[name]
            if (part.phase is BuildPhase.PENDING and order.platform in self._wiring.builds_here
                    and time.monotonic() >= self._not_before.get(name, 0.0)
                    and (token := self._wiring.runner.claim(order))):
                self._pending_since.pop(name, None)
                self._here = threading.Thread(target=self._wiring.runner.run, args=(order, token), daemon=True,
                                              name=f"part-{order.platform.slug}-{self._id}")
                self._here.start()
                return

    def _refuse_unclaimed(self, parts: dict[str, PlatformPart]) -> None:
        waited_s = self._wiring.settings.part_claim_timeout_s
        for name, part in parts.items():
            if part.phase is not BuildPhase.PENDING:
                self._pending_since.pop(name, None)
            elif time.monotonic() - self._pending_since.setdefault(name, time.monotonic()) > waited_s:
                platform = self._orders[name].platform
                raise PlatformUnavailable(f"{name}: no worker took this part within {waited_s} s: none that builds "
                                          f"{name} takes queue {platform.queue} now")


def _base_for(platform: Platform, images: dict[str, str], base: ImageReference) -> str:
    """The base's image for `platform`, pinned by digest; BaseLacksPlatform naming it and what the base has."""
    if platform.value not in images:
        raise BaseLacksPlatform(f"baseImage: {base} has no {platform.value} image (it has "
                                f"{', '.join(sorted(images)) or 'none named'})")
    return str(ImageReference(base.registry, base.repository, digest=images[platform.value]))

