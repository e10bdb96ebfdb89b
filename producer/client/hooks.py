"""Webhooks' pushes through the client: queue the check of the stored specs built on pushed tags."""

from __future__ import annotations

from core.errors import InvalidRequest
from core.reference import ImageReference
from core.stored import Trigger
from core.stores.metrics import OUT_OF_SCOPE
from core.submission import MAX_PUSHED_PER_TASK, send_pushed
from producer.client.wiring import ClientWiring, translated


@translated
class Hooks:
    """What a registry's notification asks for, once the route has read it."""

    def __init__(self, wiring: ClientWiring):
        self._app = wiring.app
        self._metrics = wiring.stores.metrics

    def bases_pushed(self, pushed: list[ImageReference]) -> None:
        """Queue the check of the stored specs built on these pushed tags: one check, of at most
        MAX_PUSHED_PER_TASK tags (InvalidRequest past it)."""
        if len(pushed) > MAX_PUSHED_PER_TASK:
            raise InvalidRequest(f"{len(pushed)} pushed tags: one check takes at most {MAX_PUSHED_PER_TASK}")
        send_pushed(self._app, [str(reference) for reference in pushed], Trigger.BASE_PUSHED)

    def out_of_scope(self, pushes: int) -> None:
        """Count pushes a webhook named on registries its token does not speak for (ignored)."""
        self._metrics.webhook_ignored(OUT_OF_SCOPE, pushes)
