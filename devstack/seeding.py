"""Stored specs with a past, for tests and benchmarks: a build recorded in a spec's history as if it had run, the
way a real one ends (submitted, then ended in one step), without running it."""

from __future__ import annotations

from typing import Any

from core.phases import BuildPhase
from core.result import BuildResult, utcnow
from core.stored import StoredSpec, Trigger
from core.stores.wiring import Stores


def built_before(stores: Stores, stored: StoredSpec, build_id: str, **fields: Any) -> BuildResult:
    """A success of the stored spec (`fields` say more: its base digest, its digest), in its history."""
    pending = BuildResult(id=build_id, image=fields.pop("image", f"seeded/{build_id}"), submitted_at=utcnow())
    stores.builds.submit(pending, {}, kept=True)
    stores.specs.record(stored.spec.name, pending, stored.tag, Trigger.SPEC_CHANGED)
    ended = pending.model_copy(update={"phase": BuildPhase.SUCCEEDED, "started_at": pending.submitted_at,
                                       "finished_at": utcnow(), **fields})
    stores.lifecycle.end(ended)
    return ended
