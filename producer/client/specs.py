"""Stored specs through the client: apply, build, list, show (with their chain), delete, and their history."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.result import BuildResult
from core.spec import ImageSpec, parse_spec
from core.stored import HistoryEntry, StoredSpec, Trigger
from core.tagging import resolve_target
from producer.client.wiring import ClientWiring, translated
from producer.overview import SpecDetail, SpecListing, SpecPage


@translated
class Specs:
    """Stored specs, their history and their place in image chains."""

    def __init__(self, wiring: ClientWiring):
        self._settings = wiring.settings
        self._stores = wiring.stores
        self._submitter = wiring.submitter
        self._chains = wiring.chains

    def apply(self, spec: ImageSpec | Mapping[str, Any]) -> tuple[StoredSpec, BuildResult | None]:
        """Create or update a stored spec; a new spec, or an edit that changes its tag, is built at once."""
        spec = spec if isinstance(spec, ImageSpec) else parse_spec(spec)
        resolve_target(spec, self._settings)  # refuse before storing what could never be built
        stored, changed = self._stores.specs.apply(spec, self._chains)
        return stored, self._submitter.submit_stored(stored, Trigger.SPEC_CHANGED) if changed else None

    def build(self, name: str, *, force: bool = False, trigger: Trigger = Trigger.MANUAL) -> BuildResult:
        """Build a stored spec now."""
        return self._submitter.submit_stored(self._stores.specs.get(name), trigger, force=force)

    def all(self) -> list[StoredSpec]:
        return self._stores.specs.all()

    def page(self, *, offset: int = 0, limit: int = 100, contains: str = "") -> SpecPage:
        """A page of stored specs in name order, each with its newest build and its schedule."""
        names, total = self._stores.specs.page(offset, limit, contains)
        schedules = self._stores.schedules.of(names)
        items = [SpecListing(**stored.model_dump(), last_build=last, schedule=schedules.get(stored.spec.name))
                 for stored, last in self._stores.specs.with_last_builds(names)]
        return SpecPage(items=items, total=total, offset=offset, limit=limit)

    def get(self, name: str) -> StoredSpec:
        return self._stores.specs.get(name)

    def detail(self, name: str) -> SpecDetail:
        """The stored spec, with the stored spec it is built on and those built on it."""
        stored = self._stores.specs.get(name)
        return SpecDetail(**stored.model_dump(), upstream=self._chains.upstream(stored.spec),
                          downstream=self._chains.downstream(name))

    def history(self, name: str) -> list[HistoryEntry]:
        """The spec's kept builds, newest first (UnknownSpec if there is no such spec)."""
        self._stores.specs.get(name)
        return self._stores.specs.history(name)

    def delete(self, name: str) -> None:
        """Delete the spec, its history, its schedule and what triggers noted of it."""
        self._stores.specs.delete(name)
        self._stores.schedules.remove(name)
        self._stores.triggers.forget(name)
