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


class BuildWatch:
    """A thread that keeps the build's lock and heartbeat alive and trips `reason` on cancel or timeout.

    The build calls `check()` between steps and for every engine stream chunk; `on_abort` (set by whoever
    runs a container) stops the engine at once, so a silent `RUN` step is stopped too."""

    def __init__(self, state: BuildState, build_id: str, target: str, token: str, timeout_s: int):
        self._state = state
        self._build_id, self._target, self._token = build_id, target, token
        self._timeout_s = timeout_s
        self._deadline = time.monotonic() + timeout_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"watch-{build_id}", daemon=True)
        self.reason: ImageBuilderError | None = None
        self.on_abort: Callable[[], None] = lambda: None

    def __enter__(self) -> BuildWatch:
        self._thread.start()  # the first heartbeat came with the lock (BuildState.take)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def check(self) -> None:
        if self.reason is not None:
            raise self.reason

    def _run(self) -> None:
        last_beat = time.monotonic()
        while not self._stop.wait(POLL_S):
            try:
                if time.monotonic() - last_beat >= HEARTBEAT_INTERVAL_S:
                    self._beat()
                    last_beat = time.monotonic()
                if self.reason is None:
                    self._look_for_a_reason_to_stop()
            except Exception:  # Redis blips must not kill the watch; the next round tries again
                logger.warning("watch of build %s could not reach Redis", self._build_id, exc_info=True)

    def _beat(self) -> None:
        if not self._state.keep_alive(self._target, self._token, self._build_id):
            logger.warning("build %s lost its lock on %s", self._build_id, self._target)

    def _look_for_a_reason_to_stop(self) -> None:
        if self._state.cancel_requested(self._build_id):
            self._abort(BuildCancelled("cancelled on request"))
        elif time.monotonic() > self._deadline:
            self._abort(BuildTimedOut(f"timed out after {self._timeout_s} s"))

    def _abort(self, reason: ImageBuilderError) -> None:
        self.reason = reason
        try:
            self.on_abort()
        except Exception:
            logger.warning("could not stop build %s at once", self._build_id, exc_info=True)
