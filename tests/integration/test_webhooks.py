"""Rebuilds on push: a real docker-registry notifies `imagebuilder api` of pushes (its `notifications` endpoint,
with a bearer token header), a real worker checks and rebuilds, and stored specs built on each other's images
rebuild in order after their parent."""

from __future__ import annotations

import json
import re
import secrets
import time

import docker
import httpx
import pytest

from core.phases import BuildPhase, BuildStep
from core.reference import parse_reference
from core.spec import parse_spec
from core.stored import Trigger
from core.stores.connection import redis_client
from core.stores.wiring import stores_on
from devstack.baseimage import DEBIAN_IMAGE, push
from devstack.services import Notifications, Registry
from devstack.stack import PULL_PASSWORD, PULL_USER, start_api, start_beat
from producer.client import BuildClient
from tests.integration.conftest import AUTH, start_worker
from tests.integration.helpers import wait_for
from tests.integration.test_builds import WAIT_S
from tests.integration.test_schedules import push_base

pytestmark = pytest.mark.integration
HOOKS_DB = 19
INDEX_DB = 20  # its own: the index is dropped there
HOOK_TOKEN = "hook-" + secrets.token_hex(16)
NOTIFYING_SECRET = "notifying"
FAST = {"IMAGEBUILDER_SCHEDULE_PASS_S": "1"}
REBUILD_STARTS_WITHIN_S = 5


@pytest.fixture(scope="module")
def hooks(stack, tmp_path_factory):
    """A worker and `imagebuilder api` with webhook tokens on a Redis database of their own, and a registry that
    notifies the API of every manifest push; a pull secret for that registry."""
    worker = start_worker(stack, "hooks", HOOKS_DB)
    api, url = start_api(stack, "hooks", HOOKS_DB, IMAGEBUILDER_WEBHOOK_TOKENS=f"other-token-{secrets.token_hex(8)},{HOOK_TOKEN}")
    registry = Registry(tmp_path_factory.mktemp("notifying-registry"), PULL_USER, PULL_PASSWORD,
                        notify=Notifications(f"{url}/hooks/registry", HOOK_TOKEN)).start()
    secret = stack.pull_secrets_dir / NOTIFYING_SECRET
    secret.mkdir(exist_ok=True)
    (secret / ".dockerconfigjson").write_text(json.dumps(
        {"auths": {registry.host: {"username": PULL_USER, "password": PULL_PASSWORD}}}))
    try:
        yield worker, api, url, registry
    finally:
        registry.stop()
        api.stop()
        worker.process.stop()


@pytest.fixture
def hooks_client(stack, hooks):
    with BuildClient(stack.settings(HOOKS_DB)) as client:
        yield client


def on_push(client, name):
    return [e for e in client.specs.history(name) if e.trigger in (Trigger.BASE_PUSHED, Trigger.BASE_REBUILT)]


def checks_done(worker) -> int:
    """How many base checks the worker has finished (Celery logs each task's success)."""
    return len(re.findall(r"imagebuilder\.bases_pushed\[[^\]]+\] succeeded", worker.log_text))


def check_outcome(worker, since: int) -> str | None:
    """What the first base check the worker finished after log offset `since` found, as it logs it."""
    found = CHECK_OUTCOME.search(worker.log_text, since)
    return found and found.group(1)


CHECK_OUTCOME = re.compile(  # the task's own line, or Celery's line of its success
    r"imagebuilder\.bases_pushed(?:\[[^\]]+\] succeeded in [0-9.]+s)?: (\{[^}]*\})")


def built_on_notifying_base(stack, client, hooks, unique, name=None) -> tuple[str, str]:
    """A stored spec on a base in the notifying registry, built once; the base's repository and digest."""
    repository = f"{hooks[3].host}/hooks-{unique}/base"
    digest = push_base(stack, repository, "1")
    _, build = client.specs.apply({"name": name or unique, "baseImage": f"{repository}:1", "pullSecret": NOTIFYING_SECRET})
    assert client.wait(build.id, timeout_s=WAIT_S).base_digest == digest
    return repository, digest


def test_a_pushed_base_starts_its_specs_rebuild_within_seconds_and_the_same_push_again_builds_nothing(
        stack, hooks, hooks_client, unique):
    worker = hooks[0]
    # Given a stored spec built on a base in a registry that notifies the API
    repository, first = built_on_notifying_base(stack, hooks_client, hooks, unique)
    # When a new version of the base tag is pushed
    new = push_base(stack, repository, "2")
    pushed_at = time.time()
    # Then its rebuild starts within seconds, marked base-pushed, and builds on the new digest
    wait_for(lambda: on_push(hooks_client, unique), "a base-pushed build", REBUILD_STARTS_WITHIN_S)
    (rebuild,) = on_push(hooks_client, unique)
    result = hooks_client.wait(rebuild.id, timeout_s=WAIT_S)
    assert rebuild.trigger is Trigger.BASE_PUSHED and result.phase is BuildPhase.SUCCEEDED, result.error
    assert rebuild.submitted_at.timestamp() - pushed_at < REBUILD_STARTS_WITHIN_S
    assert result.base_digest == new != first
    # When the very same image is pushed again (the registry notifies again)
    checked = checks_done(worker)
    push(docker.from_env(), f"{repository}:1", PULL_USER, PULL_PASSWORD)
    wait_for(lambda: checks_done(worker) > checked, "the repeated push's check", 30)
    # Then nothing more was built
    assert [e.id for e in on_push(hooks_client, unique)] == [rebuild.id]


def test_a_chain_rebuilds_parent_then_child_then_grandchild_each_once(stack, hooks, hooks_client, unique):
    # Given A on a notifying base, B built on A's image and C on B's, each built once
    a, b, c = f"{unique}-a", f"{unique}-b", f"{unique}-c"
    repository, _ = built_on_notifying_base(stack, hooks_client, hooks, unique, name=a)
    image = hooks_client.status(hooks_client.specs.history(a)[0].id).image
    for child in (b, c):
        _, build = hooks_client.specs.apply({"name": child, "baseImage": image})
        assert hooks_client.wait(build.id, timeout_s=WAIT_S).phase is BuildPhase.SUCCEEDED
        image = build.image
    # When A's base is pushed anew
    push_base(stack, repository, "2")
    # Then A, B and C each rebuild once: A because its base was pushed, the others because their parent rebuilt
    wait_for(lambda: len(on_push(hooks_client, c)) == 1 and on_push(hooks_client, c)[0].phase.is_final,
             "C's rebuild", 3 * WAIT_S)
    time.sleep(3)  # room for a duplicate, were one coming
    rebuilds = {name: on_push(hooks_client, name) for name in (a, b, c)}
    assert [len(r) for r in rebuilds.values()] == [1, 1, 1], rebuilds
    ra, rb, rc = (hooks_client.status(rebuilds[name][0].id) for name in (a, b, c))
    assert [rebuilds[n][0].trigger for n in (a, b, c)] == [Trigger.BASE_PUSHED, Trigger.BASE_REBUILT,
                                                             Trigger.BASE_REBUILT]
    assert all(r.phase is BuildPhase.SUCCEEDED for r in (ra, rb, rc))
    # And in order, each on its parent's new image
    assert ra.finished_at <= rb.started_at and rb.finished_at <= rc.started_at
    assert (rb.base_digest, rc.base_digest) == (ra.digest, rb.digest)
    # And `GET /specs/{name}` shows B's place in the chain
    with httpx.Client(base_url=hooks[2], headers=AUTH) as http:
        shown = http.get(f"/specs/{b}").json()
    assert (shown["upstream"], shown["downstream"]) == (a, [c])


def test_a_spec_that_would_close_a_cycle_is_refused_naming_it(hooks, hooks_client, unique):
    # Given A on some base, and B built on A's image (neither needs to have been built)
    a, b = f"{unique}-a", f"{unique}-b"
    _, of_a = hooks_client.specs.apply({"name": a, "baseImage": f"{hooks[3].host}/plain/base:1"})
    _, of_b = hooks_client.specs.apply({"name": b, "baseImage": of_a.image})
    image_of_b = of_b.image
    # When A is changed to build on B's image
    with httpx.Client(base_url=hooks[2], headers=AUTH) as http:
        answer = http.put(f"/specs/{a}", json={"baseImage": image_of_b})
    # Then it is refused, naming the cycle, and A is unchanged
    assert answer.status_code == 422 and f"{a} -> {b} -> {a}" in answer.json()["detail"], answer.text
    assert hooks_client.specs.get(a).spec.base_image == f"{hooks[3].host}/plain/base:1"


def test_a_push_while_the_specs_build_runs_is_checked_again_after_it(stack, hooks, hooks_client, unique):
    worker, _, url, _ = hooks
    # Given a spec whose build on base v1 is past its pull (a Debian base and a compiler toolchain, which apt takes
    # tens of seconds on: the push and its notification below must come while it runs, however loaded the host)
    repository = f"{stack.private_registry.host}/hooks-{unique}/debian"
    first = push_base(stack, repository, "1", DEBIAN_IMAGE)
    _, build = hooks_client.specs.apply({"name": unique, "baseImage": f"{repository}:1", "pullSecret": "private",
                                         "packages": {"apt": ["tree", "file", "python3-dev", "build-essential"]}})
    wait_for(lambda: hooks_client.status(build.id).step is BuildStep.BUILDING, "the build to be past its pull", 60)
    # When v2 is pushed and its registry's notification arrives while that build runs
    second = push_base(stack, repository, "2", DEBIAN_IMAGE)
    checked_before = len(worker.log_text)
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {HOOK_TOKEN}"}) as http:
        answer = http.post("/hooks/registry", json={"events": [{
            "action": "push", "target": {"repository": f"hooks-{unique}/debian", "tag": "1"},
            "request": {"host": stack.private_registry.host}}]})
    assert answer.status_code == 202
    # (a minute: what is asserted is the check's outcome, not how soon it comes)
    wait_for(lambda: check_outcome(worker, checked_before), "the check's outcome", 60)
    status = hooks_client.status(build.id)
    assert check_outcome(worker, checked_before) == "{'running-already': 1}", (status, worker.log_text[-3000:])
    # Then that build ends on v1, and a base-pushed rebuild follows it, on v2
    assert hooks_client.wait(build.id, timeout_s=WAIT_S).base_digest == first
    wait_for(lambda: on_push(hooks_client, unique), "the rebuild after it", 60)
    (rebuild,) = on_push(hooks_client, unique)
    assert rebuild.trigger is Trigger.BASE_PUSHED
    assert hooks_client.wait(rebuild.id, timeout_s=WAIT_S).base_digest == second != first


def test_a_wrong_or_missing_token_gets_401_and_nothing_is_built(stack, hooks, hooks_client, unique):
    worker, _, url, _ = hooks
    # Given a stored spec whose base has changed unannounced (its registry notifies no one), so that a valid
    # notification naming it would rebuild it
    repository = f"{stack.private_registry.host}/hooks-{unique}/base"
    push_base(stack, repository, "1")
    _, build = hooks_client.specs.apply({"name": unique, "baseImage": f"{repository}:1", "pullSecret": "private"})
    assert hooks_client.wait(build.id, timeout_s=WAIT_S).succeeded
    push_base(stack, repository, "2")
    checked = checks_done(worker)
    envelope = {"events": [{"action": "push", "target": {"repository": f"hooks-{unique}/base", "tag": "1"},
                            "request": {"host": stack.private_registry.host}}]}
    # When it is posted without a token, with a wrong one, with the API's token, and to Docker Hub's with a wrong one
    with httpx.Client(base_url=url) as http:
        answers = [http.post("/hooks/registry", json=envelope).status_code,
                   http.post("/hooks/registry", json=envelope, headers={"Authorization": "Bearer nope"}).status_code,
                   http.post("/hooks/registry", json=envelope, headers=AUTH).status_code,
                   http.post("/hooks/dockerhub/nope", json={}).status_code]
        time.sleep(2)
        # Then each got 401, no check ran and nothing was built
        assert answers == [401, 401, 401, 401]
        assert checks_done(worker) == checked and [e.id for e in hooks_client.specs.history(unique)] == [build.id]
        # And the same notification with the webhook token does rebuild it (so the refusals were what held it)
        valid = http.post("/hooks/registry", json=envelope, headers={"Authorization": f"Bearer {HOOK_TOKEN}"})
    assert valid.status_code == 202 and valid.json()["checking"] == [f"{repository}:1"]
    wait_for(lambda: on_push(hooks_client, unique), "the rebuild a valid notification starts", 30)


def test_docker_hubs_payload_is_taken_with_the_token_in_its_path_which_no_log_shows(hooks):
    _, api, url, _ = hooks
    # Given Docker Hub's push payload for a repository no stored spec is built on
    payload = {"push_data": {"pushed_at": 1764363600, "pusher": "someone", "tag": "3.12"},
               "repository": {"repo_name": "library/python", "name": "python", "namespace": "library"}}
    # When Docker Hub posts it to the path with the token
    with httpx.Client(base_url=url) as http:
        answer = http.post(f"/hooks/dockerhub/{HOOK_TOKEN}", json=payload)
        bad = http.post(f"/hooks/dockerhub/{HOOK_TOKEN}", content=b"{not json",
                        headers={"Content-Type": "application/json"})
    # Then it is queued, normalised; a body that is not JSON gets 400 naming it; and the token is in no log line
    assert answer.status_code == 202 and answer.json() == {"checking": ["docker.io/library/python:3.12"],
                                                           "ignored": 0, "out_of_scope": 0}
    assert bad.status_code == 400 and bad.json()["detail"] == "body: not JSON (or not UTF-8)"
    wait_for(lambda: "/hooks/dockerhub/[token hidden]" in api.log_path.read_text(), "the access log line", 10)
    assert HOOK_TOKEN not in api.log_path.read_text()


def test_a_schedule_tick_after_a_webhook_rebuild_finds_the_digest_unchanged(stack, hooks, hooks_client, unique):
    # Given a spec rebuilt because its base was pushed
    repository, _ = built_on_notifying_base(stack, hooks_client, hooks, unique)
    push_base(stack, repository, "2")
    wait_for(lambda: on_push(hooks_client, unique), "a base-pushed build", 30)
    assert hooks_client.wait(on_push(hooks_client, unique)[0].id, timeout_s=WAIT_S).succeeded
    builds = len(hooks_client.specs.history(unique))
    # When a schedule checks it (every second, on base changes)
    beat = start_beat(stack, f"hooks-{unique}", HOOKS_DB, **FAST)
    try:
        hooks_client.schedules.set(unique, every_s=1)
        wait_for(lambda: hooks_client.schedules.get(unique).last_checked is not None, "a scheduled check", 30)
        time.sleep(2)
    finally:
        beat.process.stop()
    # Then it found the digest unchanged: nothing was built
    assert len(hooks_client.specs.history(unique)) == builds
    assert hooks_client.schedules.get(unique).last_error is None


def test_the_index_by_base_follows_edits_and_deletes_and_covers_specs_stored_before_it(stack, unique):
    # Given two specs on one base, stored (not built), and then the index dropped, as a store from before it was
    settings = stack.settings(INDEX_DB)
    store = stores_on(redis_client(settings), settings).specs
    base, other = parse_reference(f"{unique}/base:1"), parse_reference(f"{unique}/other:2")
    for name in ("one", "two"):
        store.apply(parse_spec({"name": f"{unique}-{name}", "baseImage": f"{unique}/base:1"}))
    store._redis.delete(*store._redis.keys("imagebuilder:based-on*"))
    # When a store that has not seen the index looks up the pushed tag
    upgraded = stores_on(redis_client(settings), settings).specs
    # Then it finds both (the tag written Docker Hub's long way round), and never a spec on another tag
    assert upgraded.based_on([parse_reference(f"index.docker.io/{unique}/base:1")]) == [f"{unique}-one",
                                                                                       f"{unique}-two"]
    assert upgraded.based_on([parse_reference(f"{unique}/base:2")]) == []
    # When one is moved to another base and the other deleted
    upgraded.apply(parse_spec({"name": f"{unique}-one", "baseImage": f"{unique}/other:2"}))
    upgraded.delete(f"{unique}-two")
    # Then the old base matches nothing and the new one matches the moved spec
    assert upgraded.based_on([base]) == [] and upgraded.based_on([other]) == [f"{unique}-one"]


def test_a_push_whose_registry_is_away_at_the_check_is_checked_again_when_it_is_back(
        stack, hooks, hooks_client, unique, tmp_path):
    worker, _, url, _ = hooks
    # Given a spec built on a base in a registry of its own, and a new version of that base pushed
    registry = Registry(tmp_path / "registry", PULL_USER, PULL_PASSWORD).start()
    secret = stack.pull_secrets_dir / f"away-{unique}"
    secret.mkdir()
    (secret / ".dockerconfigjson").write_text(json.dumps(
        {"auths": {registry.host: {"username": PULL_USER, "password": PULL_PASSWORD}}}))
    try:
        repository = f"{registry.host}/away/base"
        push_base(stack, repository, "1")
        _, build = hooks_client.specs.apply({"name": unique, "baseImage": f"{repository}:1", "pullSecret": secret.name})
        assert hooks_client.wait(build.id, timeout_s=WAIT_S).succeeded
        new = push_base(stack, repository, "2")
        # When its notification is checked while the registry is down
        registry.stop()
        failed_before = worker.log_text.count("'check-failed': 1")
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {HOOK_TOKEN}"}) as http:
            assert http.post("/hooks/registry", json={"events": [{
                "action": "push", "target": {"repository": "away/base", "tag": "1"},
                "request": {"host": registry.host}}]}).status_code == 202
        wait_for(lambda: worker.log_text.count("'check-failed': 1") > failed_before,
                 "the check to meet the registry away", 30)
        # And the registry comes back
        registry.start()
        # Then the spec is checked again and rebuilt on the new base
        wait_for(lambda: on_push(hooks_client, unique), "the rebuild once the registry is back", 60)
        assert hooks_client.wait(on_push(hooks_client, unique)[0].id, timeout_s=WAIT_S).base_digest == new
    finally:
        registry.stop()
