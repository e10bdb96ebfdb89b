"""The watch beside a running build: heartbeats and lock renewal, and stopping it on cancel or timeout."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable

from core.errors import BuildCancelled, BuildTimedOut, ImageBuilderError
from core.stores.builds import HEARTBEAT_TTL_S, BuildState

logger = logging.getLogger(__name__)

POLL_S = 0.5
HEARTBEAT_INTERVAL_S = HEARTBEAT_TTL_S / 5


def backoff_s(attempt: int, *, base_s: float, cap_s: float, retry_after_s: float | None = None,
              rng: Callable[[], float] = random.random) -> float:
    """Exponential backoff with equal jitter, capped; a registry's Retry-After wins when it is longer."""
    ceiling = min(cap_s, base_s * 2 ** max(attempt - 1, 0))
    return max(ceiling / 2 + rng() * ceiling / 2, retry_after_s or 0.0)


class Watch:
    """A thread that keeps a build (or one platform's part of it) alive and trips `reason` on cancel or timeout.

    The build calls `check()` between steps and for every engine stream chunk; `on_abort` (set by whoever
    runs a container) stops the engine at once, so a silent `RUN` step is stopped too."""

    def __init__(self, name: str, timeout_s: float):
        self._name = name
        self._timeout_s = timeout_s
        self._deadline = time.monotonic() + timeout_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"watch-{name}", daemon=True)
        self.reason: ImageBuilderError | None = None
        self.on_abort: Callable[[], None] = lambda: None

    def __enter__(self) -> Watch:
        self._thread.start()  # the first heartbeat came with the lock or the claim
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def check(self) -> None:
        if self.reason is not None:
            raise self.reason

    def keep_alive(self) -> None:
        """One heartbeat."""

    def cancelled(self) -> bool:
        return False

    def _run(self) -> None:
        last_beat = time.monotonic()
        while not self._stop.wait(POLL_S):
            try:
                if time.monotonic() - last_beat >= HEARTBEAT_INTERVAL_S:
                    self.keep_alive()
                    last_beat = time.monotonic()
                if self.reason is None:
                    self._look_for_a_reason_to_stop()
            except Exception:  # Redis blips must not kill the watch; the next round tries again
                logger.warning("watch of %s could not reach Redis", self._name, exc_info=True)

    def _look_for_a_reason_to_stop(self) -> None:
        if self.cancelled():
            self.abort(BuildCancelled("cancelled on request"))
        elif time.monotonic() > self._deadline:
            self.abort(BuildTimedOut(f"timed out after {self._timeout_s:.0f} s"))

    def abort(self, reason: ImageBuilderError) -> None:
        self.reason = reason
        try:
            self.on_abort()
        except Exception:
            logger.warning("could not stop %s at once", self._name, exc_info=True)


class BuildWatch(Watch):
    """The watch of one delivery of a build: its heartbeat and its lock on the target."""

    def __init__(self, state: BuildState, build_id: str, target: str, token: str, timeout_s: int):
        super().__init__(f"build {build_id}", timeout_s)
        self._state = state
        self._build_id, self._target, self._token = build_id, target, token

    def keep_alive(self) -> None:
        if not self._state.keep_alive(self._target, self._token, self._build_id):
            logger.warning("build %s lost its lock on %s", self._build_id, self._target)

    def cancelled(self) -> bool:
        return self._state.cancel_requested(self._build_id)
