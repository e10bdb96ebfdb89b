"""Events the core announces to whoever subscribes in the same process, so that what reacts to them (the worker's
image chains) is wired where the process is, not handed through constructors."""

from __future__ import annotations

import logging
from collections.abc import Callable

logger = logging.getLogger(__name__)


class Event:
    """Calls its subscribers, in the order they came, with what happened; a subscriber that fails is logged, and
    the others still hear of it: the announcer's own work is done whatever they do."""

    def __init__(self, name: str):
        self.name = name
        self._subscribers: list[Callable[..., None]] = []

    def subscribe(self, subscriber: Callable[..., None]) -> None:
        if subscriber not in self._subscribers:
            self._subscribers.append(subscriber)

    def unsubscribe(self, subscriber: Callable[..., None]) -> None:
        if subscriber in self._subscribers:
            self._subscribers.remove(subscriber)

    def send(self, *args: object) -> None:
        for subscriber in list(self._subscribers):
            try:
                subscriber(*args)
            except Exception:
                logger.exception("a subscriber to %r failed", self.name)


# A stored spec's build pushed a new image that other stored specs are built on (the image, as pushed)
IMAGE_CHANGED = Event("image changed")
