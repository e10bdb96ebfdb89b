"""Scheduled rebuilds with the real beat (celery-redbeat), worker, Redis and registries."""

from __future__ import annotations

import time

import docker
import httpx
import pytest

from core.phases import BuildPhase
from core.stored import Trigger
from core.stores.connection import redis_client
from core.stores.wiring import stores_on
from devstack.baseimage import BUSYBOX_IMAGE, push
from devstack.seeding import built_before
from devstack.stack import PULL_PASSWORD, PULL_USER, start_beat
from producer.client import BuildClient
from tests.integration.conftest import start_worker
from tests.integration.helpers import wait_for
from tests.integration.test_builds import WAIT_S, pull_back
from tests.integration.test_failures import cli
from worker.dockerfile import BASE_DIGEST_LABEL

pytestmark = pytest.mark.integration
SCHEDULE_DB = 13
FAST = {"IMAGEBUILDER_SCHEDULE_PASS_S": "1"}
TAKEOVER_WITHIN_S = 60


@pytest.fixture(scope="module")
def scheduler(stack):
    worker = start_worker(stack, "sched", SCHEDULE_DB, **FAST)
    yield worker
    worker.process.stop()


@pytest.fixture
def beat(stack, scheduler, unique):
    process = start_beat(stack, f"active{unique}", SCHEDULE_DB, **FAST)
    yield process
    process.process.stop()


def push_base(stack, repository: str, marker: str, image: str = BUSYBOX_IMAGE) -> str:
    """Push a variant of `image` (distinct by an ENV) as `repository:1`, with the pull user; its manifest digest."""
    engine = docker.from_env()
    container = engine.containers.create(image, "true")
    container.commit(repository=repository, tag="1", changes=[f"ENV VARIANT={marker}-{time.time_ns()}"])
    container.remove()
    push(engine, f"{repository}:1", PULL_USER, PULL_PASSWORD)
    return engine.images.get_registry_data(f"{repository}:1", auth_config={
        "username": PULL_USER, "password": PULL_PASSWORD}).id


def scheduled(client, name):
    return [e for e in client.specs.history(name) if e.trigger is not Trigger.SPEC_CHANGED]


def test_a_new_base_is_rebuilt_at_the_next_tick_and_an_unchanged_one_is_not(stack, beat, unique):
    # Given a stored spec built once on base v1, scheduled every second on base changes
    repository = f"{stack.private_registry.host}/sched-{unique}/base"
    first_digest = push_base(stack, repository, "1")
    with BuildClient(stack.settings(SCHEDULE_DB, **FAST)) as client:
        _, build = client.specs.apply({"name": unique, "baseImage": f"{repository}:1", "pullSecret": "private"})
        assert client.wait(build.id, timeout_s=WAIT_S).base_digest == first_digest
        client.schedules.set(unique, every_s=1)
        # When ticks pass with the base unchanged
        wait_for(lambda: client.schedules.get(unique).last_checked is not None, "a first check", 30)
        time.sleep(3)
        # Then nothing is built, only checked
        assert scheduled(client, unique) == []
        # When a new version of the base tag is pushed
        new_digest = push_base(stack, repository, "2")
        assert new_digest != first_digest
        wait_for(lambda: scheduled(client, unique), "a base-changed build", 60)
        (rebuild,) = scheduled(client, unique)
        result = client.wait(rebuild.id, timeout_s=WAIT_S)
    # Then exactly one build ran, marked base-changed, and the image's base digest label is the new digest
    assert rebuild.trigger is Trigger.BASE_CHANGED and result.phase is BuildPhase.SUCCEEDED
    assert result.base_digest == new_digest
    assert pull_back(stack, result.image).labels[BASE_DIGEST_LABEL] == new_digest


def test_two_beats_fire_each_tick_once_and_the_standby_takes_over(stack, beat, unique):
    active = beat
    wait_for(lambda: "Sending due task" in active.log_text, "the first beat to hold the lock", 30)
    standby = start_beat(stack, f"standby{unique}", SCHEDULE_DB, **FAST)
    try:
        with BuildClient(stack.settings(SCHEDULE_DB, **FAST)) as client:
            # Given an `always` schedule every 2 s, and two beats running
            _, build = client.specs.apply({"name": unique, "baseImage": stack.busybox_base, "pullSecret": "private"})
            client.wait(build.id, timeout_s=WAIT_S)
            client.schedules.set(unique, every_s=2, policy="always")
            started = time.monotonic()
            wait_for(lambda: len(scheduled(client, unique)) >= 3, "three scheduled builds", 60)
            elapsed = time.monotonic() - started
            # Then no tick built twice: at most one build per 2 s (plus the one in flight at the start)
            assert len(scheduled(client, unique)) <= elapsed / 2 + 1
            assert "Sending due task" not in standby.log_text  # only the lock holder sends
            # When the active beat dies
            active.process.kill()
            killed = time.monotonic()
            count = len(scheduled(client, unique))
            # Then the standby takes over within a minute and builds go on
            wait_for(lambda: "Sending due task" in standby.log_text, "the standby to take over", TAKEOVER_WITHIN_S)
            wait_for(lambda: len(scheduled(client, unique)) > count, "builds after the takeover", 30)
            assert time.monotonic() - killed < TAKEOVER_WITHIN_S
            client.schedules.remove(unique)
    finally:
        standby.process.stop()


def test_a_schedule_whose_builds_keep_failing_disables_itself_until_enabled(stack, beat, unique):
    with BuildClient(stack.settings(SCHEDULE_DB, **FAST)) as client:
        # Given a schedule whose builds fail (a wrong pull secret)
        _, build = client.specs.apply({"name": unique, "baseImage": stack.busybox_base, "pullSecret": "wrong"})
        client.wait(build.id, timeout_s=WAIT_S)
        client.schedules.set(unique, every_s=1, policy="always")
        # When three scheduled builds in a row have failed
        wait_for(lambda: not client.schedules.get(unique).enabled, "the schedule to disable itself", 60)
        failures = len(scheduled(client, unique))
        time.sleep(3)
        # Then it stopped firing, and `schedule list` says why
        assert failures == 3 and len(scheduled(client, unique)) == 3
        listed = cli(stack, "schedule", "list", redis_db=SCHEDULE_DB)
        reason = f"DISABLED: disabled after 3 failed builds in a row; `imagebuilder schedule enable {unique}`"
        assert reason in listed.stdout
        # And enabling it resumes it
        assert client.schedules.enable(unique).enabled
        wait_for(lambda: len(scheduled(client, unique)) > 3, "a build after re-enabling", 30)
        # And deleting the spec removes its schedule
        client.specs.delete(unique)
        assert unique not in [s.name for s in client.schedules.all()]


def test_a_cron_schedule_fires_at_the_next_matching_minute(stack, beat, unique):
    # Given a cron schedule that matches every minute, read in a time zone other than UTC
    with BuildClient(stack.settings(SCHEDULE_DB, **FAST)) as client:
        _, build = client.specs.apply({"name": unique, "baseImage": stack.busybox_base, "pullSecret": "private"})
        client.wait(build.id, timeout_s=WAIT_S)
        schedule = client.schedules.set(unique, cron="* * * * *", tz="Asia/Kolkata", policy="always")
        assert schedule.next_due.second == 0
        # When that minute comes
        wait_for(lambda: scheduled(client, unique), "the cron tick's build", 90)
        # Then the tick built it, and the next due time moved to the following minute
        (fired,) = scheduled(client, unique)
        assert fired.trigger is Trigger.SCHEDULE and fired.submitted_at.timestamp() >= schedule.next_due.timestamp()
        assert client.schedules.get(unique).next_due > schedule.next_due
        client.schedules.remove(unique)


HOSTILE_DB = 3
# What each misbehaving registry's schedule says went wrong (see tests/integration/hostile_registry.py)
CHECK_ERRORS = {
    "html": "something other than a JSON object holding a token",
    "list": "something other than a JSON object holding a token",
    "loop": "with a redirect (HTTP 302), which is not followed",
    "metadata": "refused, it is a link-local or cloud metadata address",
    "file": "refused, it must be an http(s) URL",
    "tls": "is unreachable for manifest check of",
    "error": "is unavailable for manifest check of",
    "slow": "ReadTimeout",
}



def test_one_specs_registry_cannot_stop_the_scheduling_pass(stack, hostile, unique):
    from core.app import create_app
    from core.registry.client import registry_sessions
    from core.spec import parse_spec
    from devstack.stack import API_TOKEN, start_api
    from tests.integration.hostile_registry import BEHAVIOURS
    from worker.scheduling import SchedulingPass

    env = {"IMAGEBUILDER_REGISTRY_TIMEOUT_S": "2"}
    worker = start_worker(stack, f"hostile{unique}", HOSTILE_DB, **env)
    settings = stack.settings(HOSTILE_DB, **env)
    try:
        with BuildClient(settings) as client:
            # Given two specs on the real private registry, one rebuilt always and one checked for base changes
            for name, policy in ((f"{unique}-always", "always"), (f"{unique}-checked", "on-base-change")):
                _, build = client.specs.apply({"name": name, "baseImage": stack.busybox_base, "pullSecret": "private"})
                client.wait(build.id, timeout_s=WAIT_S)
                client.schedules.set(name, every_s=1, policy=policy)
            # And one spec per misbehaving registry, built once before, checked for base changes, all due at once
            stores = stores_on(redis_client(settings), settings)
            for behaviour in BEHAVIOURS:
                stored, _ = stores.specs.apply(parse_spec({"name": f"{unique}-{behaviour}",
                                                                  "baseImage": hostile.base(behaviour)}))
                built_before(stores, stored, f"{unique}-{behaviour}-built", base_digest="sha256:" + "0" * 64)
                client.schedules.set(stored.spec.name, every_s=1)
            scheduling_pass = SchedulingPass(create_app(settings), settings, stores, registry_sessions(settings))
            # When one scheduling pass runs
            outcomes = scheduling_pass.run(now=time.time() + 5)
            # Then each misbehaving registry failed its own check, and the other specs were checked and built
            assert outcomes == {"check-failed": len(BEHAVIOURS), "schedule": 1, "unchanged": 1}
            for behaviour, words in CHECK_ERRORS.items():
                schedule = client.schedules.get(f"{unique}-{behaviour}")
                assert words in schedule.last_error and schedule.consecutive_failures == 1, (behaviour, schedule)
            (rebuild,) = scheduled(client, f"{unique}-always")
            assert client.wait(rebuild.id, timeout_s=WAIT_S).phase is BuildPhase.SUCCEEDED
            assert client.schedules.get(f"{unique}-checked").last_checked is not None
            # And nothing was asked of the metadata address or a file: those realms were refused unrequested
            assert not any("169.254" in r or "passwd" in r for r in hostile.requests)
            # When two more passes meet the same registries
            for later_s in (10, 15):
                scheduling_pass.run(now=time.time() + later_s)
            # Then the failed checks disabled those schedules, as failed builds would, and users are told why
            for behaviour in BEHAVIOURS:
                schedule = client.schedules.get(f"{unique}-{behaviour}")
                assert not schedule.enabled and "disabled after 3 failed checks in a row" in schedule.disabled_reason
            assert client.schedules.get(f"{unique}-checked").enabled and client.schedules.get(f"{unique}-always").enabled
        listed = cli(stack, "schedule", "list", redis_db=HOSTILE_DB).stdout
        assert f"last error: checking the base failed: registry {hostile.host}" in listed
        process, url = start_api(stack, f"hostile{unique}", HOSTILE_DB)
        try:
            answer = httpx.get(f"{url}/specs/{unique}-html/schedule", headers={"Authorization": f"Bearer {API_TOKEN}"})
            assert CHECK_ERRORS["html"] in answer.json()["last_error"]
        finally:
            process.stop()
    finally:
        worker.process.stop()
