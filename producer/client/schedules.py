"""Schedules through the client: set, show, list, enable, disable, remove."""

from __future__ import annotations

from core.schedule import Policy, Schedule, parse_schedule
from producer.client.wiring import ClientWiring, translated


@translated
class Schedules:
    """The schedules of stored specs (the worker's scheduling pass fires them)."""

    def __init__(self, wiring: ClientWiring):
        self._stores = wiring.stores

    def set(self, name: str, *, cron: str | None = None, every_s: int | None = None, tz: str = "UTC",
            policy: str = Policy.ON_BASE_CHANGE.value) -> Schedule:
        """Schedule rebuilds of a stored spec: by cron in a time zone, or every `every_s` seconds."""
        self._stores.specs.get(name)
        return self._stores.schedules.set(parse_schedule(name, cron=cron, every_s=every_s, tz=tz, policy=policy))

    def all(self) -> list[Schedule]:
        return self._stores.schedules.all()

    def get(self, name: str) -> Schedule:
        return self._stores.schedules.get(name)

    def find(self, name: str) -> Schedule | None:
        return self._stores.schedules.find(name)

    def remove(self, name: str) -> None:
        self._stores.schedules.get(name)
        self._stores.schedules.remove(name)

    def enable(self, name: str) -> Schedule:
        """Resume a schedule that disabled itself after repeated failures."""
        return self._stores.schedules.enable(name)

    def disable(self, name: str) -> Schedule:
        """Stop a schedule firing until it is enabled again."""
        return self._stores.schedules.disable(name, "disabled by hand; enable it to resume")
