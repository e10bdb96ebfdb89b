"""A multi-platform build's parts on real Redis: one claim wins, a lost claim writes nothing, a part whose worker
stopped beating is taken back (and only then), and stopping a build stops every part not yet ended."""

from __future__ import annotations

import pytest
import redis

from core.phases import BuildPhase
from core.result import BuildResult, utcnow
from core.stores.parts import PART_BEAT_KEY
from core.stores.wiring import Stores, stores_on

pytestmark = pytest.mark.integration
PARTS_DB = 31
ARM64, AMD64 = "linux/arm64", "linux/amd64"


@pytest.fixture
def stores(stack) -> Stores:
    conn = redis.Redis(port=stack.redis.port, db=PARTS_DB, decode_responses=True)
    yield stores_on(conn, stack.settings(PARTS_DB))
    conn.close()


def running_build(stores: Stores, unique: str) -> str:
    """A submitted build, made Running, with a part for amd64 and one for arm64."""
    pending = BuildResult(id=f"{unique}-build", image=f"127.0.0.1:5000/{unique}/x:1", submitted_at=utcnow())
    stores.builds.submit(pending, {})
    stores.builds.advance(pending.model_copy(update={"phase": BuildPhase.RUNNING}))
    stores.parts.open(pending.id, [AMD64, ARM64])
    return pending.id


def test_one_claim_of_a_part_wins_and_opening_again_keeps_what_was_claimed(stores, unique):
    # Given a build's parts, both Pending
    build_id = running_build(stores, unique)
    # When two workers claim arm64, and a later delivery of the build opens its parts again
    first, second = stores.parts.claim(build_id, ARM64, "a", "w1"), stores.parts.claim(build_id, ARM64, "b", "w2")
    parts = stores.parts.open(build_id, [AMD64, ARM64])
    # Then only the first claim holds, and it is still Running by the first worker, on its first attempt
    assert (first, second) == (True, False)
    assert (parts[ARM64].phase, parts[ARM64].worker, parts[ARM64].attempts) == (BuildPhase.RUNNING, "w1", 1)
    assert parts[AMD64].phase is BuildPhase.PENDING


def test_a_part_is_taken_back_only_once_its_worker_stops_beating_and_the_old_claim_then_writes_nothing(
        stores, unique):
    # Given a part claimed by worker w1
    build_id = running_build(stores, unique)
    stores.parts.claim(build_id, ARM64, "a", "w1")
    # When the build's delivery tries to take it back while w1 beats, and again once its heartbeat has lapsed
    while_alive = stores.parts.take_back(build_id, ARM64)
    stores.redis.delete(PART_BEAT_KEY.format(id=build_id, platform=ARM64))  # as if 15 s passed in silence
    after = stores.parts.take_back(build_id, ARM64)
    # Then only the second take-back happened; w1's late success is refused, and w2 claims it on attempt 2
    assert (while_alive, after) == (False, True)
    assert not stores.parts.patch(build_id, ARM64, "a", {"phase": "Succeeded", "digest": "sha256:x"}, ended=True)
    assert stores.parts.claim(build_id, ARM64, "b", "w2")
    assert stores.parts.read(build_id)[ARM64].attempts == 2


def test_stopping_a_build_stops_its_unended_parts_and_their_workers_see_it(stores, unique):
    # Given one part that succeeded and one under way
    build_id = running_build(stores, unique)
    stores.parts.claim(build_id, AMD64, "a", "w1")
    stores.parts.patch(build_id, AMD64, "a", {"phase": "Succeeded", "digest": "sha256:1"}, ended=True)
    stores.parts.claim(build_id, ARM64, "b", "w2")
    # When the build is stopped
    stopped = stores.parts.stop(build_id)
    # Then the running part is Cancelled, the finished one kept, and its worker's next heartbeat says it lost it
    parts = stores.parts.read(build_id)
    assert (stopped, parts[ARM64].phase, parts[AMD64].phase) == (1, BuildPhase.CANCELLED, BuildPhase.SUCCEEDED)
    assert not stores.parts.beat(build_id, ARM64, "b")


def test_no_part_of_a_cancelled_or_ended_build_is_claimed(stores, unique):
    # Given a build whose cancel was asked for, and one that ended
    cancelled, ended = running_build(stores, f"{unique}-c"), running_build(stores, f"{unique}-e")
    stores.builds.request_cancel(cancelled)
    record = stores.builds.get(ended)
    stores.lifecycle.end(record.model_copy(update={"phase": BuildPhase.FAILED, "finished_at": utcnow()}))
    # Then neither has a part claimed
    assert not stores.parts.claim(cancelled, ARM64, "a", "w1")
    assert not stores.parts.claim(ended, ARM64, "a", "w1")
