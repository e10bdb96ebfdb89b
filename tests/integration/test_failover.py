"""A Redis Sentinel failover under load: two workers, beat and the API on a master, a replica and three sentinels
(devstack/sentinel.py; the sentinels call a silent master down after DOWN_AFTER_MS = 1 s, short so that the test
takes seconds), submissions through the API and the Python client, and the master SIGKILLed in the middle. Then
back again, the old master having rejoined as a replica."""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import redis
from playwright.sync_api import expect

from core.errors import StoreUnavailable
from core.phases import BuildPhase
from core.stores.connection import redis_client
from devstack.sentinel import SentinelRedis
from devstack.stack import WorkerProcess, start_api, start_beat, start_worker
from producer.client import BuildClient
from tests.integration.conftest import AUTH
from tests.integration.test_console import BUILD_WAIT_MS, sign_in
from tests.integration.test_delivery import slow_spec

pytestmark = pytest.mark.integration

LOAD_S = 24  # submissions go on this long, the master killed a third of the way in
SUBMIT_EVERY_S = 0.25  # per side: the API and the client
TARGETS = 16  # distinct images among the submissions: most submissions find theirs built, or being built
SCHEDULE_EVERY_S = 3
END_WITHIN_S = 180
# Well past the API's client giving a command up: 3 tries backing off 0.2, 0.4 and 0.8 s, and each reconnection
# tried 3 times too (4 s did not always do). The sentinels' own DOWN_AFTER_MS is not, so a failover may come within.
CUTTING_DOWN_AFTER_MS = 10_000
REPLICATED = {"IMAGEBUILDER_REDIS_WAIT_REPLICAS": "1", "IMAGEBUILDER_REDIS_WAIT_TIMEOUT_MS": "2000",
              "IMAGEBUILDER_SCHEDULE_PASS_S": "1", "IMAGEBUILDER_HISTORY_KEEP_SUCCEEDED": "500",
              "IMAGEBUILDER_HISTORY_KEEP_FAILED": "500"}


@dataclass
class Load:
    """What the submitters were answered: ids, and every refusal by its status or error."""

    accepted: list[str] = field(default_factory=list)
    refused: Counter = field(default_factory=Counter)
    retry_after: set[str] = field(default_factory=set)
    readiness: list[int] = field(default_factory=list)  # /readyz's statuses in turn, each change once


@dataclass
class Service:
    http: httpx.Client
    workers: list[WorkerProcess]
    logs: list[Path]  # beat's and the API's


@pytest.fixture(scope="module")
def group(tmp_path_factory):
    sentinel_redis = SentinelRedis(tmp_path_factory.mktemp("sentinel")).start()
    yield sentinel_redis
    sentinel_redis.stop()


@pytest.fixture(scope="module")
def env(group):
    return {**group.env(), **REPLICATED}


@pytest.fixture(scope="module")
def service(stack, env):
    """Two workers, a beat and the API, all naming Redis by its sentinels."""
    workers = [start_worker(stack, f"failover-{n}", **env) for n in (1, 2)]
    beat = start_beat(stack, "failover", **env)
    api, url = start_api(stack, "failover", **env)
    with httpx.Client(base_url=url, headers=AUTH, timeout=30) as http:
        yield Service(http, workers, [beat.process.log_path, api.log_path])
    for process in [api, beat.process, *(worker.process for worker in workers)]:
        process.stop()


@pytest.fixture(scope="module")
def client(stack, env):
    with BuildClient(stack.settings(**env)) as build_client:
        yield build_client


def spec(stack, unique: str, n: int) -> dict:
    return {"name": f"{unique}-{n % TARGETS}", "baseImage": stack.busybox_base, "pullSecret": "private"}


def submit_by_api(http: httpx.Client, stack, unique: str, n: int, load: Load) -> None:
    answer = http.post("/builds", json=spec(stack, unique, n))
    if answer.status_code == 202:
        load.accepted.append(answer.json()["id"])
        return
    load.refused[answer.status_code] += 1
    if "Retry-After" in answer.headers:
        load.retry_after.add(answer.headers["Retry-After"])


def submit_by_client(client: BuildClient, stack, unique: str, n: int, load: Load) -> None:
    try:
        load.accepted.append(client.submit(spec(stack, unique, n)).id)
    except StoreUnavailable:
        load.refused["StoreUnavailable"] += 1


def ready(http: httpx.Client, n: int, load: Load) -> None:
    status = http.get("/readyz").status_code
    if not load.readiness or load.readiness[-1] != status:
        load.readiness.append(status)


def under_load(group: SentinelRedis, submit, kill_at_s: float) -> Load:
    """Submissions on both sides for LOAD_S, the master killed at `kill_at_s` and restarted once a replica has
    taken over, as a supervisor (systemd, Kubernetes) would: the master accepts builds while a replica confirms
    them (IMAGEBUILDER_REDIS_WAIT_REPLICAS=1), and with one replica, that is the old master back."""
    load, stop = Load(), threading.Event()

    def side(send) -> None:
        n = 0
        while not stop.is_set():
            send(n, load)
            n += 1
            time.sleep(SUBMIT_EVERY_S)

    threads = [threading.Thread(target=side, args=(send,)) for send in submit]
    for thread in threads:
        thread.start()
    time.sleep(kill_at_s)
    old = group.kill_master()
    group.wait_for_new_master(old)
    group.rejoin(old)
    time.sleep(max(0.0, LOAD_S - kill_at_s))
    stop.set()
    for thread in threads:
        thread.join()
    return load


def manifest_puts(stack) -> Counter:
    log = stack.push_registry.process.log_path.read_text(errors="replace")
    return Counter(re.findall(r'"PUT /v2/([^ ]+)/manifests/(?!sha256[:-])([^ "]+)', log))


def ended(client: BuildClient, ids: list[str]) -> dict[str, BuildPhase]:
    deadline = time.monotonic() + END_WITHIN_S
    return {build_id: client.wait(build_id, timeout_s=max(1.0, deadline - time.monotonic())).phase
            for build_id in ids}


def fired(workers: list[WorkerProcess], name: str) -> list[tuple[str, str]]:
    """Each scheduling pass that fired `name`: the build it queued (or attached to, one of the same target being
    under way) and the next due time its claim set (worker/scheduling.py logs both)."""
    pattern = rf"schedule of {re.escape(name)}: schedule build (\S+), next due (\S+)"
    return [found for worker in workers for found in re.findall(pattern, worker.log_text)]


@pytest.mark.parametrize("round_trip", ["there", "back"])
def test_a_failover_under_load_keeps_every_accepted_build_and_ends_each_once(stack, group, service, client,
                                                                              unique, round_trip):
    # Given two workers, beat and the API on a Sentinel-managed Redis, and a schedule firing every 3 s
    scheduled = f"{unique}-scheduled"
    client.specs.apply(spec(stack, scheduled, 0) | {"name": scheduled})
    client.schedules.set(scheduled, every_s=SCHEDULE_EVERY_S, policy="always")
    pushes_before = manifest_puts(stack)
    # When the master is SIGKILLed while both sides submit builds
    sides = [lambda n, load: submit_by_api(service.http, stack, unique, n, load),
             lambda n, load: submit_by_client(client, stack, unique, n, load),
             lambda n, load: ready(service.http, n, load)]
    load = under_load(group, sides, kill_at_s=LOAD_S / 3)
    client.schedules.disable(scheduled)
    # Then every build answered with an id ends, Succeeded
    phases = ended(client, load.accepted)
    assert Counter(phases.values()) == Counter({BuildPhase.SUCCEEDED: len(phases)})
    assert len(load.accepted) > 3 * sum(load.refused.values())  # refused only while no master answered
    # and refusals were retryable answers: 503 with Retry-After from the API, StoreUnavailable from the client
    assert set(load.refused) <= {503, "StoreUnavailable"}, load.refused
    assert load.retry_after <= {"5"}
    # and /readyz said not ready while no master answered, and ready again after
    assert load.readiness == [200, 503, 200]
    # and no image was pushed twice (but the scheduled one, forced at each tick)
    pushes = manifest_puts(stack) - pushes_before
    assert [(repo, tag) for (repo, tag), count in pushes.items() if count > 1 and scheduled not in repo] == []
    # and the schedule fired once per due time, across the failover too
    fires = fired(service.workers, scheduled)
    assert len(fires) >= LOAD_S / SCHEDULE_EVERY_S / 2, fires
    assert [due for due, count in Counter(due for _, due in fires).items() if count > 1] == []
    builds = {build_id for build_id, _ in fires}
    assert len(client.specs.history(scheduled)) == len(builds) + 1  # and the one build its apply made


def test_a_live_log_and_the_console_go_on_across_a_failover_to_the_builds_end(stack, group, env, service, client,
                                                                             browser, unique):
    # Given a build running long enough (apt over the network), its live log followed through the API
    build_id = client.submit(slow_spec(stack, f"{unique}-followed"), force=True).id
    lines: list[str] = []

    def follow() -> None:
        with service.http.stream("GET", f"/builds/{build_id}/logs", params={"follow": "true"},
                                 timeout=END_WITHIN_S) as answer:
            lines.extend(answer.iter_lines())

    follower = threading.Thread(target=follow)
    follower.start()
    # and open in the console of an API whose live logs end at once when Redis does not answer
    api, url = start_api(stack, "failover-console", **env, IMAGEBUILDER_LIVE_LOG_PATIENCE_S="0")
    context = browser.new_context(base_url=url)
    try:
        page = context.new_page()
        sign_in(page, f"/ui/builds/{build_id}")
        expect(page.locator("#log span").first).to_be_visible(timeout=BUILD_WAIT_MS)
        # When the master is killed while the build runs, the sentinels slower to fail over than the API's client
        # to give up a command (so the console's API, with no patience, cuts its stream)
        with group.noticing_after(CUTTING_DOWN_AFTER_MS):
            old = group.kill_master()
            group.wait_for_new_master(old)
        group.rejoin(old)
        follower.join(END_WITHIN_S)
        # Then the API's stream went on through the failover and ended with the build's phase, not cut short
        assert "event: unavailable" not in lines
        assert lines[lines.index("event: end") + 1] == "data: Succeeded", lines[-20:]
        # And the console, whose stream was cut, followed the log again by itself to the build's end
        expect(page.locator("#phase")).to_have_text("Succeeded", timeout=BUILD_WAIT_MS)
        follows = api.log_path.read_text().count(f"GET /builds/{build_id}/logs?follow=true")
        assert follows >= 2, follows
    finally:
        context.close()
        api.stop()


# A script that keeps the master busy for a few seconds, then writes: a kill lands while it runs
BUSY_THEN_WRITE = "local i = 0 while i < 3e8 do i = i + 1 end redis.call('SET', KEYS[1], '1') return 1"
BUSY_TOLERATED_MS = 15_000


def test_a_command_cut_by_a_failover_is_retried_on_the_new_master_not_the_old_one(stack, group):
    # Given a client through the sentinels running a script on the master
    client = redis_client(stack.settings(LOST_DB, **group.env(LOST_DB)), patient=True)
    group.wait_out_tilt()  # so that the kill below lands while the script runs
    answers: list[object] = []
    running = threading.Thread(target=lambda: answers.append(client.eval(BUSY_THEN_WRITE, 1, "written")))
    running.start()
    time.sleep(0.3)
    # When the master is killed while it runs, a replica promoted, and the old master back as a replica of it (the
    # sentinels slow to call a master down: the retried script keeps the new one busy for seconds, which at their
    # own 1 s they would take for a failure, and fail over again to the old master once it is back)
    with group.noticing_after(BUSY_TOLERATED_MS):
        old = group.kill_master()
        group.wait_for_new_master(old)
        group.rejoin(old)
        # Then the script, retried, ran on the new master and wrote there (redis-py alone sends each retry back to
        # the old master's address: refused, then read-only, until the retries run out a minute later)
        running.join(END_WITHIN_S)
    assert answers == [1]
    assert client.get("written") == "1"


LOST_DB = 1  # no worker until the test starts one


def test_a_build_whose_message_a_failover_lost_is_sent_again_and_built_once(stack, group, unique):
    # Given two builds accepted while no worker serves their database, one of them Pending with its message gone
    # from the broker (as a failover between a worker's pop of it and its note of the delivery leaves it)
    env = {**group.env(LOST_DB), **REPLICATED, "IMAGEBUILDER_REQUEUE_UNDELIVERED_AFTER_S": "2"}
    with BuildClient(stack.settings(LOST_DB, **env)) as lost_client:
        lost, kept = (lost_client.submit(spec(stack, f"{unique}-{n}", n)).id for n in (1, 2))
        broker = redis.Redis(port=group.master().port, password=group.password, db=LOST_DB, decode_responses=True)
        (message,) = [m for m in broker.lrange("builds", 0, -1) if lost in m]
        assert broker.lrem("builds", 1, message) == 1
        time.sleep(2)
        # When a worker starts on that database
        worker = start_worker(stack, "failover-lost", LOST_DB, **env)
        try:
            results = [lost_client.wait(build_id, timeout_s=END_WITHIN_S) for build_id in (lost, kept)]
        finally:
            worker.process.stop()
    # Then its reaper sent the lost one again, only that one, and both were built
    assert [r.phase for r in results] == [BuildPhase.SUCCEEDED] * 2
    sent_again = re.findall(r"build (\S+) was neither queued nor delivered", worker.log_text)
    assert sent_again == [lost]


def test_no_log_of_the_failover_holds_a_password(group, service):
    # Given the logs of the workers, beat and the API that rode out the failovers above
    logs = [worker.log_text for worker in service.workers] + [path.read_text(errors="replace")
                                                              for path in service.logs]
    # Then neither Redis's password nor the sentinels' is in any of them
    assert [log for log in logs if group.password in log or group.sentinel_password in log] == []
