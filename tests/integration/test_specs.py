"""Stored specs and their history on every surface: CLI, client, HTTP; history pruned to the kept counts."""

from __future__ import annotations

import json
import textwrap

import httpx
import pytest
import redis

from core.phases import BuildPhase
from core.stored import Trigger
from core.stores.logs import LOG_KEY
from core.tagging import compute_tag
from devstack.stack import API_TOKEN, start_api
from producer.client import BuildClient
from tests.integration.conftest import start_worker
from tests.integration.test_builds import WAIT_S
from tests.integration.test_failures import cli

pytestmark = pytest.mark.integration
SPECS_DB = 12
KEEP = {"IMAGEBUILDER_HISTORY_KEEP_SUCCEEDED": "2", "IMAGEBUILDER_HISTORY_KEEP_FAILED": "1"}


@pytest.fixture(scope="module")
def specs_worker(stack):
    worker = start_worker(stack, "specs", SPECS_DB, **KEEP)
    yield worker
    worker.process.stop()


def test_apply_a_primehub_list_builds_new_specs_and_skips_unchanged_ones(stack, specs_worker, unique, tmp_path):
    # Given a file with a PrimeHub List of two ImageSpecs and a plain spec as a second document
    spec_file = tmp_path / "specs.yaml"
    spec_file.write_text(textwrap.dedent(f"""
        apiVersion: v1
        kind: List
        items:
        - apiVersion: primehub.io/v1alpha1
          kind: ImageSpec
          metadata: {{name: {unique}-a}}
          spec: {{baseImage: "{stack.busybox_base}", pullSecret: private}}
        - apiVersion: primehub.io/v1alpha1
          kind: ImageSpec
          metadata: {{name: {unique}-b}}
          spec: {{baseImage: "{stack.busybox_base}", pullSecret: private}}
        ---
        name: {unique}-c
        baseImage: "{stack.busybox_base}"
        pullSecret: private
    """))
    # When it is applied twice
    first = cli(stack, "spec", "apply", str(spec_file), redis_db=SPECS_DB, **KEEP)
    second = cli(stack, "spec", "apply", str(spec_file), redis_db=SPECS_DB, **KEEP)
    # Then the first apply built all three (spec-changed) and the second changed nothing
    assert first.returncode == 0 and first.stdout.count("changed, building") == 3, first.stderr
    assert second.stdout.count(": unchanged") == 3
    with BuildClient(stack.settings(SPECS_DB, **KEEP)) as client:
        for name in ("a", "b", "c"):
            (entry,) = client.specs.history(f"{unique}-{name}")
            assert entry.trigger is Trigger.SPEC_CHANGED
            assert client.wait(entry.id, timeout_s=WAIT_S).phase is BuildPhase.SUCCEEDED
    listed = json.loads(cli(stack, "spec", "list", "--json", redis_db=SPECS_DB).stdout)
    assert {f"{unique}-a", f"{unique}-b", f"{unique}-c"} <= {s["spec"]["name"] for s in listed}


def test_an_edit_gives_a_new_tag_and_builds_it(stack, specs_worker, unique):
    with BuildClient(stack.settings(SPECS_DB, **KEEP)) as client:
        spec = {"name": unique, "baseImage": stack.busybox_base, "pullSecret": "private"}
        stored, build = client.specs.apply(spec)
        client.wait(build.id, timeout_s=WAIT_S)
        # When the spec is edited so that its tag changes
        edited, rebuild = client.specs.apply({**spec, "baseImage": stack.debian_base})
        # Then the new tag is built, recorded as spec-changed, newest first in the history
        assert edited.tag != stored.tag and edited.tag == compute_tag(edited.spec)
        assert client.wait(rebuild.id, timeout_s=WAIT_S).image.endswith(f":{edited.tag}")
        newest, oldest = client.specs.history(unique)
        assert (newest.tag, newest.trigger, oldest.tag) == (edited.tag, Trigger.SPEC_CHANGED, stored.tag)


def test_history_keeps_the_configured_counts_and_drops_the_rest_with_their_logs(stack, specs_worker, unique):
    with BuildClient(stack.settings(SPECS_DB, **KEEP)) as client:
        # Given a stored spec built five times successfully
        good = {"name": unique, "baseImage": stack.busybox_base, "pullSecret": "private"}
        _, first = client.specs.apply(good)
        built = [first]
        for _ in range(4):
            client.wait(built[-1].id, timeout_s=WAIT_S)
            built.append(client.specs.build(unique, force=True))
        client.wait(built[-1].id, timeout_s=WAIT_S)
        # And then three times failing (same tag: the pull secret is not part of it)
        client.specs.apply({**good, "pullSecret": "wrong"})
        failed = []
        for _ in range(3):
            failed.append(client.specs.build(unique, force=True))
            client.wait(failed[-1].id, timeout_s=WAIT_S)
        # Then the history keeps the newest 2 succeeded and the newest 1 failed, and the others' logs are gone
        kept = client.specs.history(unique)
        assert [e.phase for e in kept] == [BuildPhase.FAILED, BuildPhase.SUCCEEDED, BuildPhase.SUCCEEDED]
        assert kept[0].id == failed[-1].id and kept[1].id == built[-1].id
        dropped = [b.id for b in built[:-2]] + [f.id for f in failed[:-1]]
        logs = redis.Redis(port=stack.redis.port, db=SPECS_DB)
        assert not any(logs.exists(LOG_KEY.format(id=i)) for i in dropped)
        assert all(logs.exists(LOG_KEY.format(id=e.id)) for e in kept)


def test_stored_specs_over_http(stack, specs_worker, unique):
    process, url = start_api(stack, "specs", SPECS_DB, **KEEP)
    try:
        http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {API_TOKEN}"}, timeout=30)
        applied = http.put(f"/specs/{unique}", json={"baseImage": stack.busybox_base, "pullSecret": "private"})
        assert applied.status_code == 200 and applied.json()["build"]["phase"] == "Pending"
        assert http.get(f"/specs/{unique}").json()["spec"]["name"] == unique
        assert unique in [s["spec"]["name"] for s in http.get("/specs", params={"name": unique}).json()]
        manual = http.post(f"/specs/{unique}/builds", params={"force": "true"})
        assert manual.status_code == 202
        triggers = [e["trigger"] for e in http.get(f"/specs/{unique}/history").json()]
        assert set(triggers) <= {"manual", "spec-changed"} and "spec-changed" in triggers
        assert http.put(f"/specs/{unique}", json={"name": "other", "baseImage": "x"}).status_code == 422
        assert http.delete(f"/specs/{unique}").status_code == 204
        assert http.get(f"/specs/{unique}").status_code == 404
        assert http.get(f"/specs/{unique}/history").status_code == 404
    finally:
        process.stop()
