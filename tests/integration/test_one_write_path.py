"""One write path per key, tried against the interleavings that break a read-modify-write: a build's end patching
its schedule while a scheduling pass claims it, and two `spec apply` calls that would close a cycle together. Real
Redis; the interleavings are forced, not hoped for."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
import redis

from config.settings import Settings
from core.errors import InvalidSpec
from core.imagechain import ImageChains
from core.schedule import Schedule
from core.spec import parse_spec
from core.stores.schedules import DUE_KEY, ScheduleStore
from core.stores.specs import SpecStore

pytestmark = pytest.mark.integration
STORES_DB = 30
DISABLE_AFTER = 3


class Interleaved(redis.Redis):
    """A Redis client that runs `before(n)` before the n-th command it sends (a pipeline counts as one), so that a
    test can put another client's write between any two of this client's."""

    def __init__(self, before: Callable[[int], None], **kwargs):
        super().__init__(**kwargs)
        self._before, self.sent = before, 0

    def execute_command(self, *args, **options):
        self._step()
        return super().execute_command(*args, **options)

    def pipeline(self, transaction=True, shard_hint=None):
        pipe = super().pipeline(transaction, shard_hint)
        execute = pipe.execute

        def stepped(*args, **kwargs):
            self._step()
            return execute(*args, **kwargs)

        pipe.execute = stepped
        return pipe

    def _step(self) -> None:
        self.sent += 1
        self._before(self.sent)


@pytest.fixture
def conn(stack):
    conn = redis.Redis(port=stack.redis.port, db=STORES_DB, decode_responses=True)
    yield conn
    conn.close()


def due_schedules(store: ScheduleStore, names: list[str]) -> dict[str, float]:
    """Schedules every second, set now and due a second later, as a pass finds them; each one's due time."""
    for name in names:
        store.set(Schedule(name=name, every_s=1))
    time.sleep(1.1)
    return dict(store.due())


@pytest.mark.parametrize("failed", [True, False])
def test_a_build_end_and_a_pass_claiming_its_schedule_in_any_order_fire_it_once(stack, conn, unique, failed):
    passes = ScheduleStore(conn, disable_after=DISABLE_AFTER)
    points = range(1, 6)
    due = due_schedules(passes, [f"{unique}-{point}" for point in points])
    # For every point before, between and after the build end's Redis commands (one script now, so before or after
    # it; the read-modify-write it replaced had a GET, a SET and a ZADD, and the pass between them fired twice)
    for point in points:
        name, claims = f"{unique}-{point}", []
        ender = ScheduleStore(Interleaved(lambda n: claims.append(passes.claim([(name, due[name])])) if n == point
                                          else None, port=stack.redis.port, db=STORES_DB, decode_responses=True),
                              disable_after=DISABLE_AFTER)
        # When a scheduled build of it ends, and a scheduling pass claims its due time at that point
        ender.build_ended(name, succeeded=not failed, error="boom")
        if not claims:  # the end sent fewer commands than this point: the pass comes after it
            claims.append(passes.claim([(name, due[name])]))
        # Then the pass claimed it once and moved it on; nothing put the old due time back
        assert [len(claimed) for claimed in claims] == [1], point
        assert conn.zscore(DUE_KEY, name) == passes.get(name).next_due.timestamp() > due[name], point
        assert passes.claim([(name, due[name])]) == [], point
        # And the end's own change is there too
        assert passes.get(name).consecutive_failures == (1 if failed else 0), point


def test_failures_in_a_row_disable_a_schedule_once_even_when_two_ends_race(stack, conn, unique):
    # Given a schedule that disables itself after two failures in a row, and two of its builds failing at once
    store = ScheduleStore(conn, disable_after=2)
    store.set(Schedule(name=unique, every_s=60))
    both = threading.Barrier(2)

    def end() -> None:
        both.wait()
        store.build_ended(unique, succeeded=False, error="boom")

    threads = [threading.Thread(target=end) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Then both failures were counted, and it is disabled and off the due set
    schedule = store.get(unique)
    assert schedule.consecutive_failures == 2 and not schedule.enabled
    assert "disabled after 2 failed builds in a row" in schedule.disabled_reason
    assert conn.zscore(DUE_KEY, unique) is None


def test_two_applies_that_would_close_a_cycle_together_store_no_cycle(stack, conn, unique):
    settings = Settings(_env_file=None, PRIMEHUB_CUSTOM_IMAGE_REPO_PREFIX="registry.example/team")
    specs = SpecStore(conn, None, None, keep_succeeded=1, keep_failed=1)
    chains = ImageChains(specs, settings)
    a, b = f"{unique}-a", f"{unique}-b"
    # Given two applies, A on B's image and B on A's, each past its cycle check before either writes
    both_checked = threading.Barrier(2, timeout=10)

    def check_then_wait(spec, read) -> None:
        chains.refuse_cycle(spec, read)
        try:
            both_checked.wait()
        except threading.BrokenBarrierError:  # a retry after the other wrote: no one to wait for
            pass

    outcomes: dict[str, str] = {}

    def apply(name: str, other: str) -> None:
        spec = parse_spec({"name": name, "baseImage": f"registry.example/team/{other}:0123abcd"})
        try:
            SpecStore(redis.Redis(port=stack.redis.port, db=STORES_DB, decode_responses=True), None, None,
                      keep_succeeded=1, keep_failed=1).apply(spec, check=check_then_wait)
            outcomes[name] = "stored"
        except InvalidSpec as e:
            outcomes[name] = str(e)

    threads = [threading.Thread(target=apply, args=pair) for pair in ((a, b), (b, a))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Then one was stored and the other refused, naming the cycle it would have closed
    assert sorted(v == "stored" for v in outcomes.values()) == [False, True], outcomes
    refused = next(v for v in outcomes.values() if v != "stored")
    assert "would make a cycle" in refused and (f"{a} -> {b} -> {a}" in refused or f"{b} -> {a} -> {b}" in refused)
    assert sum(specs.find(name) is not None for name in (a, b)) == 1
