"""The surfaces other systems use: the CLI, a raw Celery message by task name, live logs."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import pytest

from core.phases import BuildPhase, BuildStep
from core.spec import parse_spec
from core.tagging import compute_tag
from devstack.services import wait_until
from tests.integration.test_builds import WAIT_S, pull_back
from tests.integration.test_failures import cli

pytestmark = pytest.mark.integration

BARE_CELERY_CLIENT = textwrap.dedent(
    """
    import json, sys
    from celery import Celery

    url, spec = sys.argv[1], json.loads(sys.argv[2])
    app = Celery(broker=url, backend=url)
    result = app.send_task("imagebuilder.build", kwargs={"spec": spec, "force": False}, queue="builds")
    value = result.get(timeout=float(sys.argv[3]))
    mine = sorted(m for m in sys.modules if m.split(".")[0] in {"worker", "config", "producer"})
    print(json.dumps({"id": result.id, "state": result.state, "result": value, "project_modules": mine}))
    """
)


def test_a_bare_celery_app_builds_an_image_by_task_name(stack, worker, unique):
    # Given a Celery client that knows only the task's public name and JSON body
    spec = {"name": unique, "baseImage": stack.busybox_base, "pullSecret": "private"}
    # When it sends the task and waits for the result
    done = subprocess.run(
        [sys.executable, "-I", "-c", BARE_CELERY_CLIENT, stack.env()["IMAGEBUILDER_REDIS_URL"],
         json.dumps(spec), str(WAIT_S)],
        capture_output=True, text=True, timeout=WAIT_S, cwd="/",
    )
    # Then the image is built and pushed, and the client imported nothing of this project
    assert done.returncode == 0, done.stderr
    reply = json.loads(done.stdout)
    assert reply["project_modules"] == []
    assert reply["state"] == "SUCCESS"
    assert reply["result"]["phase"] == BuildPhase.SUCCEEDED.value
    assert reply["result"]["image"].endswith(f"/team/{unique}:{compute_tag(parse_spec(spec))}")
    pull_back(stack, reply["result"]["image"])


def test_cli_submit_wait_status_and_logs(stack, worker, unique, tmp_path):
    # Given PrimeHub's own custom-resource shape in a YAML file
    spec_file = tmp_path / "imagespec.yaml"
    spec_file.write_text(textwrap.dedent(f"""
        apiVersion: primehub.io/v1alpha1
        kind: ImageSpec
        metadata:
          name: {unique}
          namespace: hub
        spec:
          baseImage: {stack.busybox_base}
          pullSecret: private
          updateTime: "2026-01-01T00:00:00Z"
    """))
    # When it is submitted with --wait --json
    done = cli(stack, "submit", str(spec_file), "--wait", "--json")
    # Then the CLI exits 0 with the Succeeded result object on stdout
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["phase"] == "Succeeded" and result["image"].split("/")[-1].startswith(unique)
    assert {"id", "phase", "step", "image", "digest", "base_digest", "skipped", "error", "submitted_at",
            "started_at", "finished_at"} <= set(result)
    # And status and logs read the same build back
    status = cli(stack, "status", result["id"], "--json")
    assert status.returncode == 0 and json.loads(status.stdout) == result
    logs = cli(stack, "logs", result["id"])
    assert logs.returncode == 0 and "==> building" in logs.stdout and "Dockerfile: USER root" in logs.stdout


def test_logs_are_readable_live_while_the_build_runs(stack, client, unique):
    # Given a build that takes a while (apt over the network, forced so no layer cache shortens it)
    spec = parse_spec({"name": unique, "baseImage": stack.debian_base, "pullSecret": "private",
                       "packages": {"apt": ["tree"]}})
    build_id = client.submit(spec, force=True).id
    # When its log is followed from the start
    phases_while_reading = []
    lines = []
    for line in client.logs(build_id, follow=True):
        lines.append(line)
        phases_while_reading.append(client.status(build_id).phase)
    # Then lines arrived while it was still Running, and following ended when it finished
    assert BuildPhase.RUNNING in phases_while_reading
    assert client.status(build_id).phase is BuildPhase.SUCCEEDED
    assert "==> pulling" in lines and "==> pushing" in lines
    assert any("tree" in line and "Setting up" in line for line in lines)


def test_running_build_reports_its_step_as_a_celery_state(stack, client, unique, settings):
    # Given a running build
    from celery.result import AsyncResult

    from core.app import create_app

    spec = parse_spec({"name": unique, "baseImage": stack.debian_base, "pullSecret": "private",
                       "packages": {"apt": ["file"]}})
    build_id = client.submit(spec).id
    app = create_app(settings)
    # When its Celery state is polled until it ends
    seen = set()
    async_result = AsyncResult(build_id, app=app)
    while not async_result.ready():
        seen.add(async_result.state)
        if async_result.state in {s.celery_state for s in BuildStep}:
            assert async_result.info["phase"] == "Running"
        time.sleep(0.05)
    # Then the custom states appeared and the final one is SUCCESS with the result object
    assert seen & {BuildStep.BUILDING.celery_state, BuildStep.PUSHING.celery_state}
    assert async_result.state == "SUCCESS" and async_result.result["phase"] == "Succeeded"
    app.close()


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [({"spec": {"name": "Bad Name", "baseImage": "x"}}, "name: \"Bad Name\" is not allowed"),
     ({"spec": {"name": "ok", "baseImage": "busybox", "packages": {"apt": ["$(id)"]}}}, "packages.apt[0]"),
     ({"spec": None}, "invalid image spec"),
     ({"spec": {"name": "ok", "baseImage": "busybox"}, "force": "false"}, "force: must be a JSON boolean")],
)
def test_a_malformed_message_sent_by_name_fails_with_the_validation_message(stack, client, settings, kwargs, words):
    # Given a message that bypassed the producer's validation
    from core.app import create_app

    app = create_app(settings)
    # When it is sent straight to the queue by task name
    sent = app.send_task("imagebuilder.build", kwargs=kwargs, queue="builds")
    # Then the build ends Failed with the validation message, and Celery's own result says FAILURE
    wait_until(lambda: client.status(sent.id), "the worker's record of a raw message", WAIT_S)
    result = client.wait(sent.id, timeout_s=WAIT_S)
    assert result.phase is BuildPhase.FAILED and words in result.error
    with pytest.raises(Exception, match="invalid image spec|force"):
        sent.get(timeout=WAIT_S)
    app.close()
