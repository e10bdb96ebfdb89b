"""Triggers that rebuild only what changed, once: replays of a push build nothing, a spec is built at most once per
base digest by triggers, rechecks during a running build are merged and end, and one notification costs a bounded
amount of work. A real docker-registry holds the bases, a real worker checks and builds, a real API takes the
notifications."""

from __future__ import annotations

import re
import secrets

import httpx
import pytest
import redis

from config.celery_config import BUILD_QUEUE, CHECK_QUEUE
from config.settings import Settings
from core.reference import parse_reference
from core.spec import parse_spec
from core.stored import Trigger
from core.stores.connection import redis_client
from core.stores.specs import SpecStore
from core.stores.triggers import RECHECK_KEY, TriggerStore
from core.stores.wiring import stores_on
from devstack.baseimage import DEBIAN_IMAGE
from devstack.stack import start_api
from producer.client import BuildClient
from tests.integration.conftest import AUTH, start_worker
from tests.integration.helpers import wait_for
from tests.integration.test_builds import WAIT_S
from tests.integration.test_schedules import push_base
from worker.basewatch import recheck_limit

pytestmark = pytest.mark.integration
TRIGGERS_DB = 27
QUEUES_DB = 28  # no worker: what a notification queues stays there to be looked at
HOOK_TOKEN = "hook-" + secrets.token_hex(16)
SCOPED_TOKEN = "scoped-" + secrets.token_hex(16)
REPLAYS = 5


@pytest.fixture(scope="module")
def triggers(stack):
    """A worker and `imagebuilder api` on a Redis database of their own, the API taking one unscoped webhook token
    and one scoped to the private registry."""
    worker = start_worker(stack, "triggers", TRIGGERS_DB)
    tokens = f"{HOOK_TOKEN} {SCOPED_TOKEN}@{stack.private_registry.host}"
    api, url = start_api(stack, "triggers", TRIGGERS_DB, IMAGEBUILDER_WEBHOOK_TOKENS=tokens)
    try:
        with BuildClient(stack.settings(TRIGGERS_DB)) as client:
            yield worker, url, client
    finally:
        api.stop()
        worker.process.stop()


def notify(url: str, host: str, repository: str, tag: str = "1", token: str = HOOK_TOKEN) -> httpx.Response:
    """What a distribution registry posts for a manifest pushed by tag."""
    envelope = {"events": [{"action": "push", "target": {"repository": repository, "tag": tag},
                            "request": {"host": host}}]}
    return httpx.post(f"{url}/hooks/registry", json=envelope, headers={"Authorization": f"Bearer {token}"})


def checks_done(worker) -> int:
    return len(re.findall(r"imagebuilder\.bases_pushed\[[^\]]+\] (?:succeeded|retry)", worker.log_text))


def replay(url: str, host: str, repository: str, worker, times: int = REPLAYS) -> None:
    """Send the same notification `times` times and wait until the worker has checked each."""
    before = checks_done(worker)
    for _ in range(times):
        assert notify(url, host, repository).status_code == 202
    wait_for(lambda: checks_done(worker) >= before + times, f"{times} checks", 60)


def test_replays_of_an_unchanged_push_build_nothing_when_the_last_success_was_skipped(stack, triggers, unique):
    worker, url, client = triggers
    # Given a spec built once, then built again without force: its newest success is a skip, which pulled nothing
    repository = f"sk-{unique}/base"
    digest = push_base(stack, f"{stack.private_registry.host}/{repository}", "1")
    _, first = client.specs.apply({"name": unique, "baseImage": f"{stack.private_registry.host}/{repository}:1",
                             "pullSecret": "private"})
    assert client.wait(first.id, timeout_s=WAIT_S).succeeded
    skipped = client.wait(client.specs.build(unique).id, timeout_s=WAIT_S)
    assert skipped.skipped and skipped.base_digest is None
    # When the registry notifies of that same, unchanged base five times
    replay(url, stack.private_registry.host, repository, worker)
    # Then no build was queued, and the skipped build's history now says which base its image was built on
    history = client.specs.history(unique)
    assert [entry.id for entry in history] == [skipped.id, first.id]
    assert history[0].base_digest == digest


def test_a_spec_that_never_succeeded_is_built_once_per_base_digest_and_its_failure_not_retried(
        stack, triggers, unique):
    worker, url, client = triggers
    # Given a spec that fails to build on its base (busybox has no pip), and has never succeeded
    repository = f"ns-{unique}/base"
    push_base(stack, f"{stack.private_registry.host}/{repository}", "1")
    _, first = client.specs.apply({"name": unique, "baseImage": f"{stack.private_registry.host}/{repository}:1",
                             "pullSecret": "private", "packages": {"pip": ["six"]}})
    assert not client.wait(first.id, timeout_s=WAIT_S).succeeded
    # When a new version of its base is pushed and notified five times
    push_base(stack, f"{stack.private_registry.host}/{repository}", "2")
    replay(url, stack.private_registry.host, repository, worker)
    # Then exactly one build was made on it, and it failed (its failure stays in the history, and is not retried)
    pushed = [e for e in client.specs.history(unique) if e.trigger is Trigger.BASE_PUSHED]
    assert len(pushed) == 1 and client.wait(pushed[0].id, timeout_s=WAIT_S).phase.value == "Failed"
    replay(url, stack.private_registry.host, repository, worker, times=2)
    assert [e.id for e in client.specs.history(unique) if e.trigger is Trigger.BASE_PUSHED] == [pushed[0].id]
    # And a base that changes again is built once more
    push_base(stack, f"{stack.private_registry.host}/{repository}", "3")
    replay(url, stack.private_registry.host, repository, worker, times=2)
    assert len([e for e in client.specs.history(unique) if e.trigger is Trigger.BASE_PUSHED]) == 2


def test_notifications_during_a_running_build_wait_in_one_recheck_and_make_at_most_one_more_build(
        stack, triggers, unique):
    worker, url, client = triggers
    # Given a spec whose build on base v1 is past its pull (a Debian base that apt takes a while on)
    repository = f"run-{unique}/debian"
    base = f"{stack.private_registry.host}/{repository}"
    first = push_base(stack, base, "1", DEBIAN_IMAGE)
    _, build = client.specs.apply({"name": unique, "baseImage": f"{base}:1", "pullSecret": "private",
                             "packages": {"apt": ["tree", "file"]}})
    wait_for(lambda: client.status(build.id).step is not None and client.status(build.id).step.value == "building",
             "the build to be past its pull", 60)
    # When v2 is pushed and notified ten times while that build runs
    log_start = len(worker.log_text)
    second = push_base(stack, base, "2", DEBIAN_IMAGE)
    replay(url, stack.private_registry.host, repository, worker, times=10)
    # Then one recheck of that base is pending, whatever the number of notifications
    recheck = RECHECK_KEY.format(base=str(parse_reference(f"{base}:1")))
    conn = redis.Redis(port=stack.redis.port, db=TRIGGERS_DB, decode_responses=True)
    assert conn.exists(recheck) and client.status(build.id).phase.value == "Running"
    holders = {conn.get(recheck)}
    # And once the build ends on v1, exactly one rebuild follows, on v2, after which nothing more is built
    assert client.wait(build.id, timeout_s=WAIT_S).base_digest == first
    wait_for(lambda: [e for e in client.specs.history(unique) if e.trigger is Trigger.BASE_PUSHED], "the rebuild", 60)
    (rebuild,) = [e for e in client.specs.history(unique) if e.trigger is Trigger.BASE_PUSHED]
    assert client.wait(rebuild.id, timeout_s=WAIT_S).base_digest == second
    wait_for(lambda: not conn.exists(recheck), "the recheck to end", 60)
    assert len(client.specs.history(unique)) == 2
    # And every retry in between was that one task's
    retried = set(re.findall(r"imagebuilder\.bases_pushed\[([^\]]+)\] retry", worker.log_text[log_start:]))
    assert retried == holders


def test_a_notification_past_its_bounds_is_refused_and_checks_queue_apart_from_builds(stack):
    # Given an API with no worker behind it
    api, url = start_api(stack, "queues", QUEUES_DB, IMAGEBUILDER_WEBHOOK_TOKENS=HOOK_TOKEN)
    try:
        conn = redis.Redis(port=stack.redis.port, db=QUEUES_DB)
        host = stack.private_registry.host
        events = [{"action": "push", "target": {"repository": "many/base", "tag": f"t{i}"},
                   "request": {"host": host}} for i in range(101)]
        # When a notification names 101 tags
        answer = httpx.post(f"{url}/hooks/registry", json={"events": events},
                            headers={"Authorization": f"Bearer {HOOK_TOKEN}"})
        # Then it is refused naming the bound, and nothing is queued
        assert answer.status_code == 400 and "at most 100" in answer.json()["detail"], answer.text
        assert conn.llen(CHECK_QUEUE) == 0
        # When one names 100 tags
        assert httpx.post(f"{url}/hooks/registry", json={"events": events[:100]},
                          headers={"Authorization": f"Bearer {HOOK_TOKEN}"}).status_code == 202
        # Then one check is queued, on the checks queue: never in front of builds
        assert conn.llen(CHECK_QUEUE) == 1 and conn.llen(BUILD_QUEUE) == 0
    finally:
        api.stop()


def test_a_scoped_token_is_ignored_and_counted_for_a_push_on_another_registry(stack, triggers, unique):
    worker, url, client = triggers
    # Given a spec on a base in the push registry, which the scoped token does not speak for
    repository = f"team/scope-{unique}"
    before = checks_done(worker)
    # When a notification under the scoped token names that registry, and one names the token's own
    foreign = notify(url, stack.push_registry.host, repository, token=SCOPED_TOKEN)
    own = notify(url, stack.private_registry.host, repository, token=SCOPED_TOKEN)
    # Then the foreign push is ignored and counted, and the own one is checked
    assert foreign.status_code == 202 and foreign.json() == {"checking": [], "ignored": 0, "out_of_scope": 1}
    assert own.json()["checking"] == [f"{stack.private_registry.host}/{repository}:1"]
    wait_for(lambda: checks_done(worker) >= before + 1, "the one check", 30)
    metrics = httpx.get(f"{url}/metrics", headers=AUTH)
    assert re.search(r'imagebuilder_webhook_pushes_ignored_total\{why="out-of-scope"\} [1-9]', metrics.text)


class RepliesCounted(redis.Redis):
    """A Redis client that counts the items of every reply it reads: what a lookup really reads."""

    items = 0

    def parse_response(self, connection, command_name, **options):
        reply = super().parse_response(connection, command_name, **options)
        RepliesCounted.items += sum(len(r) if isinstance(r, (list, set, dict)) else 1
                                    for r in (reply if isinstance(reply, list) else [reply]))
        return reply


def test_the_lookup_for_a_pushed_tag_reads_only_the_specs_on_that_tag(stack, unique):
    # Given 500 specs on one tag of a repository and 2 on another tag of it
    settings = stack.settings(QUEUES_DB)
    store = stores_on(redis_client(settings), settings).specs
    for i in range(500):
        store.apply(parse_spec({"name": f"{unique}-o{i}", "baseImage": f"{unique}/base:other"}))
    for i in range(2):
        store.apply(parse_spec({"name": f"{unique}-p{i}", "baseImage": f"{unique}/base:pushed"}))
    counted = SpecStore(RepliesCounted(port=stack.redis.port, db=QUEUES_DB, decode_responses=True), None, None)
    counted.based_on([parse_reference(f"{unique}/base:1")])  # the index is in place: nothing more to make
    # When the pushed tag is looked up
    RepliesCounted.items = 0
    found = counted.based_on([parse_reference(f"{unique}/base:pushed")])
    # Then it finds its two specs, and read no more than those two names (not the 500 on the other tag)
    assert found == [f"{unique}-p0", f"{unique}-p1"] and RepliesCounted.items <= 3


def test_one_recheck_per_base_is_held_at_a_time_and_let_go_when_no_longer_needed(stack, unique):
    triggers = TriggerStore(redis.Redis(port=stack.redis.port, db=QUEUES_DB, decode_responses=True))
    base = f"registry.example/{unique}:1"
    # Given a check task that holds the recheck of a base
    assert triggers.hold_rechecks([base], "task-a", 60) == [base]
    # When another task finds the same base to recheck
    # Then it does not hold it (the pending recheck will look), while the holder keeps it on its next try
    assert triggers.hold_rechecks([base], "task-b", 60) == []
    assert triggers.hold_rechecks([base], "task-a", 60) == [base]
    # And once the holder lets go, another may hold it; letting go of what one does not hold changes nothing
    triggers.release_rechecks([base], "task-b")
    assert triggers.hold_rechecks([base], "task-b", 60) == []
    triggers.release_rechecks([base], "task-a")
    assert triggers.hold_rechecks([base], "task-b", 60) == [base]


def test_rechecks_last_as_long_as_the_longest_build_and_no_longer():
    settings = Settings(_env_file=None, IMAGEBUILDER_BUILD_TIMEOUT_S="3600")
    assert recheck_limit(settings) * 15 / 60 == pytest.approx(61, abs=0.25)


def test_a_trigger_claim_is_taken_once_per_digest_and_given_back_when_no_build_was_queued(stack, unique):
    triggers = TriggerStore(redis.Redis(port=stack.redis.port, db=QUEUES_DB, decode_responses=True))
    # Given a spec no trigger built yet: the first claim on a digest is taken, a second is not
    assert triggers.claim(unique, "sha256:" + "1" * 64) == ""
    assert triggers.claim(unique, "sha256:" + "1" * 64) is None
    # When a new digest is claimed and then given back (its build attached to one already running)
    assert triggers.claim(unique, "sha256:" + "2" * 64) == "sha256:" + "1" * 64
    triggers.unclaim(unique, "sha256:" + "2" * 64, "sha256:" + "1" * 64)
    # Then the new digest can be claimed again later, and the old one is still marked
    assert triggers.claim(unique, "sha256:" + "1" * 64) is None
    assert triggers.claim(unique, "sha256:" + "2" * 64) == "sha256:" + "1" * 64


def test_specs_indexed_before_the_per_tag_index_are_found_by_tag_once_a_new_store_looks(stack, unique):
    # Given specs indexed as the previous version did: the hash per repository only, and its marker "1"
    settings = stack.settings(QUEUES_DB)
    store = stores_on(redis_client(settings), settings).specs
    for name in ("one", "two"):
        store.apply(parse_spec({"name": f"{unique}-{name}", "baseImage": f"{unique}/base:1"}))
    conn = redis.Redis(port=stack.redis.port, db=QUEUES_DB)
    conn.delete(*conn.keys(f"imagebuilder:based-on-tag:docker.io/{unique}/*"))
    conn.set("imagebuilder:based-on-indexed", "1")
    # When a store of this version looks up the pushed tag
    upgraded = stores_on(redis_client(settings), settings).specs
    # Then it indexes them by tag first, and finds both
    assert upgraded.based_on([parse_reference(f"{unique}/base:1")]) == [f"{unique}-one", f"{unique}-two"]
    assert conn.get("imagebuilder:based-on-indexed") == b"2"
