"""One write path per key, tried against the interleavings that break a read-modify-write: a build's end patching
its schedule while a scheduling pass claims it, two `spec apply` calls that would close a cycle together, a build's
end as its readers see it, and two ends racing. Real Redis; the interleavings are forced, not hoped for."""

from __future__ import annotations

import datetime
import threading
import time
import uuid
from collections.abc import Callable

import pytest
import redis
from celery.result import AsyncResult

from config.settings import Settings
from core.app import create_app
from core.errors import BuildCancelled, InvalidSpec
from core.imagechain import ImageChains
from core.phases import BuildPhase
from core.result import BuildResult, utcnow
from core.schedule import Schedule
from core.spec import parse_spec
from core.stored import Trigger
from core.stores.builds import HEARTBEATS_KEY, INFLIGHT_KEY, LOCK_KEY, RECORD_KEY
from core.stores.connection import Replicas
from core.stores.logs import LOG_END_FIELD, LOG_KEY
from core.stores.schedules import DUE_KEY, ScheduleStore
from core.stores.specs import ENTRY_KEY, HISTORY_KEY, SpecStore
from core.stores.wiring import Stores, stores_on
from worker.progress import Progress
from worker.taskresult import success_of

pytestmark = pytest.mark.integration
STORES_DB = 30
DISABLE_AFTER = 3
DIGEST = "sha256:" + "5" * 64


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


def scheduled_build(stores: Stores, name: str) -> BuildResult:
    """A build of stored spec `name` that its schedule queued, in its history, not ended yet."""
    build_id = str(uuid.uuid4())
    pending = BuildResult(id=build_id, image=f"127.0.0.1:5000/{name}/scheduled:{build_id}", submitted_at=utcnow())
    assert stores.builds.submit(pending, {}, kept=True) == build_id
    stores.specs.record(name, pending, "1", Trigger.SCHEDULE)
    return pending


def ended(build: BuildResult, *, failed: bool) -> BuildResult:
    phase = BuildPhase.FAILED if failed else BuildPhase.SUCCEEDED
    return build.model_copy(update={"phase": phase, "finished_at": utcnow(), "error": "boom" if failed else None})


@pytest.mark.parametrize("failed", [True, False])
def test_a_build_end_and_a_pass_claiming_its_schedule_in_any_order_fire_it_once(stack, conn, unique, failed):
    settings = stack.settings(STORES_DB).model_copy(update={"schedule_disable_after": DISABLE_AFTER})
    passes = ScheduleStore(conn, Replicas(conn, settings.redis_target), disable_after=DISABLE_AFTER)
    points = range(1, 6)
    due = due_schedules(passes, [f"{unique}-{point}" for point in points])
    # For every point before, between and after the build end's Redis commands (the schedule is told in the one
    # script that ends the build, so before or after it; the read-modify-write it replaced had a GET, a SET and a
    # ZADD, and the pass between them fired twice)
    for point in points:
        name, claims = f"{unique}-{point}", []
        build = scheduled_build(stores_on(conn, settings), name)
        ender = stores_on(Interleaved(lambda n: claims.append(passes.claim([(name, due[name])])) if n == point
                                      else None, port=stack.redis.port, db=STORES_DB, decode_responses=True),
                          settings)
        # When a scheduled build of it ends, and a scheduling pass claims its due time at that point
        ender.lifecycle.end(ended(build, failed=failed))
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
    stores = stores_on(conn, stack.settings(STORES_DB).model_copy(update={"schedule_disable_after": 2}))
    stores.schedules.set(Schedule(name=unique, every_s=60))
    builds = [scheduled_build(stores, unique) for _ in range(2)]
    both = threading.Barrier(2)

    def end(build: BuildResult) -> None:
        both.wait()
        stores.lifecycle.end(ended(build, failed=True))

    threads = [threading.Thread(target=end, args=(build,)) for build in builds]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Then both failures were counted, and it is disabled and off the due set
    schedule = stores.schedules.get(unique)
    assert schedule.consecutive_failures == 2 and not schedule.enabled
    assert "disabled after 2 failed builds in a row" in schedule.disabled_reason
    assert f"`imagebuilder schedule enable {unique}` resumes it" in schedule.disabled_reason
    assert conn.zscore(DUE_KEY, unique) is None


def test_two_applies_that_would_close_a_cycle_together_store_no_cycle(stack, conn, unique):
    settings = Settings(_env_file=None, PRIMEHUB_CUSTOM_IMAGE_REPO_PREFIX="registry.example/team")
    specs = SpecStore(conn, None, None)
    chains = ImageChains(specs, settings)
    a, b = f"{unique}-a", f"{unique}-b"
    # Given two applies, A on B's image and B on A's, each past its cycle check before either writes
    both_checked = threading.Barrier(2, timeout=10)

    class CheckThenWait:
        def stored_form(self, spec, read):
            form = chains.stored_form(spec, read)
            try:
                both_checked.wait()
            except threading.BrokenBarrierError:  # a retry after the other wrote: no one to wait for
                pass
            return form

        def built_on_image_of(self, stored):
            return chains.built_on_image_of(stored)

    outcomes: dict[str, str] = {}

    def apply(name: str, other: str) -> None:
        spec = parse_spec({"name": name, "baseImage": f"registry.example/team/{other}:0123abcd"})
        try:
            SpecStore(redis.Redis(port=stack.redis.port, db=STORES_DB, decode_responses=True), None,
                      None).apply(spec, CheckThenWait())
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


def snapshot(conn: redis.Redis, build: BuildResult) -> dict:
    """What a reader sees of a build at one instant (one transaction): its phase, whether it is still the target's
    in-flight build, its heartbeat, the target's lock, and whether its log has ended."""
    with conn.pipeline() as pipe:
        pipe.get(RECORD_KEY.format(id=build.id)).get(INFLIGHT_KEY.format(target=build.image))
        pipe.zscore(HEARTBEATS_KEY, build.id).get(LOCK_KEY.format(target=build.image))
        pipe.xrevrange(LOG_KEY.format(id=build.id), count=1)
        record, inflight, heartbeat, lock, last = pipe.execute()
    return {"final": BuildResult.model_validate_json(record).phase.is_final, "inflight": inflight == build.id,
            "heartbeat": heartbeat is not None, "locked": lock is not None,
            "log ended": bool(last) and LOG_END_FIELD in last[0][1]}


def running(stores: Stores, image: str) -> tuple[BuildResult, str]:
    """A build submitted and begun by a delivery, as a worker holds it: the record and the lock's token."""
    pending = BuildResult(id=str(uuid.uuid4()), image=image, submitted_at=utcnow())
    stores.builds.submit(pending, {"spec": {}, "force": False})
    token = uuid.uuid4().hex
    begun = stores.lifecycle.begin(pending.model_copy(update={"phase": BuildPhase.RUNNING}),
                                   {"phase": BuildPhase.RUNNING.value}, token, {})
    assert begun.outcome == "started"
    return begun.record, token


def test_every_reader_sees_a_build_wholly_running_or_wholly_ended(stack, conn, unique):
    # Given a running build, and a reader that looks at it before every command its end sends, and after the last
    seen: list[dict] = []
    build, token = running(stores_on(conn, stack.settings(STORES_DB)), f"127.0.0.1:5000/{unique}/end:1")
    ender = stores_on(Interleaved(lambda n: seen.append(snapshot(conn, build)), port=stack.redis.port,
                                  db=STORES_DB, decode_responses=True), stack.settings(STORES_DB))
    # When a worker ends it
    final = ender.lifecycle.end(build.model_copy(update={"phase": BuildPhase.SUCCEEDED, "finished_at": utcnow()}),
                                last_line="pushed", lock_token=token)
    seen.append(snapshot(conn, build))
    # Then every look saw all of the running build or all of its end: never a final record still in flight, locked,
    # or beating, nor an end marker beside a running record
    running_whole = {"final": False, "inflight": True, "heartbeat": True, "locked": True, "log ended": False}
    ended_whole = {"final": True, "inflight": False, "heartbeat": False, "locked": False, "log ended": True}
    assert final is not None and final.succeeded
    assert all(look in (running_whole, ended_whole) for look in seen), seen
    assert seen[0] == running_whole and seen[-1] == ended_whole


def test_two_ends_of_one_build_at_once_end_it_once(stack, conn, unique):
    # Given a running build, and a worker's end and a reaper's racing for it
    stores = stores_on(conn, stack.settings(STORES_DB))
    build, token = running(stores, f"127.0.0.1:5000/{unique}/race:1")
    both = threading.Barrier(2)
    outcomes: dict[BuildPhase, BuildResult | None] = {}

    def end(phase: BuildPhase) -> None:
        both.wait()
        outcomes[phase] = stores.lifecycle.end(build.model_copy(update={"phase": phase, "finished_at": utcnow()}),
                                               last_line=f"ended {phase.value}", lock_token=token)

    threads = [threading.Thread(target=end, args=(phase,)) for phase in (BuildPhase.SUCCEEDED, BuildPhase.FAILED)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Then exactly one of them ended it, with one end marker, and the record says that one's phase
    winners = [final for final in outcomes.values() if final is not None]
    assert len(winners) == 1
    assert stores.builds.get(build.id).phase is winners[0].phase
    ends = [f for _, f in conn.xrange(LOG_KEY.format(id=build.id)) if LOG_END_FIELD in f]
    assert [f[LOG_END_FIELD] for f in ends] == [winners[0].phase.value]


def test_a_skip_keeps_the_submissions_record_and_refuses_a_cancelled_or_begun_build(stack, conn, unique):
    stores = stores_on(conn, stack.settings(STORES_DB))

    def queued(tag: str) -> tuple[BuildResult, Progress]:
        pending = BuildResult(id=str(uuid.uuid4()), image=f"127.0.0.1:5000/{unique}/skip:{tag}",
                              submitted_at=utcnow() - datetime.timedelta(minutes=5))
        stores.builds.submit(pending, {"spec": {}, "force": False})
        return pending, Progress(pending.id, stores.builds, stores.lifecycle, stores.log, on_state=lambda *_: None,
                                 worker="w1@host")

    # Given a queued build whose target is there, when a worker skips it (without a lock)
    pending, progress = queued("there")
    final = progress.skip(pending.image, DIGEST, "there already: nothing to build")
    # Then it ends skipped in one step, on the record its submission wrote, and is no longer in flight
    stored = stores.builds.get(pending.id)
    assert final == stored and stored.skipped and stored.digest == DIGEST and stored.worker == "w1@host"
    assert stored.submitted_at == pending.submitted_at and stored.started_at <= stored.finished_at
    assert conn.get(INFLIGHT_KEY.format(target=pending.image)) is None
    # And its log reads the skip's line, which the end marker carries, and ends
    assert list(stores.log.lines(pending.id, follow=True)) == ["there already: nothing to build"]
    # Given a queued build whose cancel was asked for, when a worker would skip it, then it is refused, unchanged
    pending, progress = queued("cancelled")
    stores.builds.request_cancel(pending.id)
    with pytest.raises(BuildCancelled):
        progress.skip(pending.image, DIGEST, "there already")
    assert stores.builds.get(pending.id).phase is BuildPhase.PENDING
    # Given a build another delivery began (a lost worker's), when a worker would skip it, then nothing is written:
    # that delivery ends it once begun, under the lock
    build, _ = running(stores, f"127.0.0.1:5000/{unique}/skip:begun")
    assert Progress(build.id, stores.builds, stores.lifecycle, stores.log, on_state=lambda *_: None).skip(
        build.image, DIGEST, "there already") is None
    assert stores.builds.get(build.id) == build


def test_a_workers_success_writes_celerys_result_of_the_task_with_the_end(stack, conn, unique):
    # Given a queued build, a Celery app on its Redis whose build task is running it, and a subscriber to the
    # task's result channel
    settings = stack.settings(STORES_DB)
    stores, app = stores_on(conn, settings), create_app(settings)

    @app.task(name=f"test.build-{unique}", bind=True, ignore_result=True)
    def task(self) -> None:
        return None

    pending = BuildResult(id=str(uuid.uuid4()), image=f"127.0.0.1:5000/{unique}/celery:1", submitted_at=utcnow())
    stores.builds.submit(pending, {"spec": {}, "force": False})
    task.push_request(id=pending.id, hostname="w1@host")
    key = task.backend.get_key_for_task(pending.id).decode()
    subscriber = conn.pubsub(ignore_subscribe_messages=True)
    subscriber.subscribe(key)
    # When the worker skips it, laying out Celery's result as the task does
    progress = Progress(pending.id, stores.builds, stores.lifecycle, stores.log, on_state=lambda *_: None,
                        worker="w1@host", success=lambda: success_of(task))
    final = progress.skip(pending.image, DIGEST, "there already")
    # Then Celery reads SUCCESS with the final record as the task's return value, expiring as Celery's results do
    result = AsyncResult(pending.id, app=app)
    assert result.state == "SUCCESS" and result.result == final.model_dump(mode="json") == stores.builds.get(
        pending.id).model_dump(mode="json")
    assert result.date_done is not None and 0 < conn.ttl(key) <= settings.result_expires_s
    # And the subscriber was told the same, as Celery's own backend publishes it
    published = [m["data"] for m in (subscriber.get_message(timeout=0.5) for _ in range(10)) if m]
    assert published and task.backend.decode(published[0]) == task.backend.get_task_meta(pending.id)
    task.pop_request()
    subscriber.close()
    app.close()


def test_whoever_sees_a_stored_specs_build_end_sees_its_history_pruned(stack, conn, unique):
    # Given a history that keeps 1 succeeded and 1 failed build, holding a success, a failure, and a mark whose
    # record is gone
    settings = stack.settings(STORES_DB).model_copy(update={"history_keep_succeeded": 1, "history_keep_failed": 1})
    stores = stores_on(conn, settings)
    older = [scheduled_build(stores, unique) for _ in range(3)]
    stores.lifecycle.end(ended(older[0], failed=False))
    stores.lifecycle.end(ended(older[1], failed=True))
    conn.delete(RECORD_KEY.format(id=older[2].id))
    newest = scheduled_build(stores, unique)
    # When another success ends, and the history is read right after each command the ender sends
    seen: list[list[str]] = []
    ender = stores_on(Interleaved(lambda n: n > 1 and seen.append([e.id for e in stores.specs.history(unique)]),
                                  port=stack.redis.port, db=STORES_DB, decode_responses=True), settings)
    ender.lifecycle.end(ended(newest, failed=False))
    seen.append([e.id for e in stores.specs.history(unique)])
    # Then every reader after the end saw the history already pruned: the new success and the failure; the older
    # success and the mark without a record are gone, with their records and logs
    assert all(ids == [newest.id, older[1].id] for ids in seen), seen
    assert set(conn.zrange(HISTORY_KEY.format(name=unique), 0, -1)) == {newest.id, older[1].id}
    for gone in (older[0].id, older[2].id):
        assert not conn.exists(RECORD_KEY.format(id=gone), LOG_KEY.format(id=gone), ENTRY_KEY.format(id=gone))
