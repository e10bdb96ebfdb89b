"""The HTTP API, served by uvicorn as `imagebuilder api`, against the session's Redis, worker and registries."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest

from devstack.stack import API_TOKEN, start_api
from tests.integration.conftest import AUTH
from tests.integration.helpers import wait_for
from tests.integration.test_builds import WAIT_S

pytestmark = pytest.mark.integration
IDLE_DB = 10  # for the schemathesis run: what it queues is never built


def busybox(stack, name):
    return {"name": name, "baseImage": stack.busybox_base, "pullSecret": "private"}


def finished(api, build_id):
    return api.get(f"/builds/{build_id}").json()["phase"] in {"Succeeded", "Failed", "Cancelled"}


def test_every_route_but_the_probes_needs_a_valid_bearer_token(api, stack):
    routes = [(method, path) for path, item in api.get("/openapi.json").json()["paths"].items()
              for method in item if path not in ("/healthz", "/readyz")]
    assert len(routes) >= 14
    for token in (None, "wrong", API_TOKEN + "x"):
        headers = {"Authorization": f"Bearer {token}"} if token else {"Authorization": ""}
        for method, path in routes + [("GET", "/docs"), ("GET", "/openapi.json"), ("GET", "/no-such-route")]:
            answer = api.request(method.upper(), path.replace("{build_id}", "x").replace("{name}", "x"),
                                 headers=headers, json=busybox(stack, "noauth"))
            assert answer.status_code == 401 and answer.headers["www-authenticate"] == "Bearer", (method, path)
    health = api.get("/healthz", headers={"Authorization": ""})
    assert health.status_code == 200 and health.json()["redis"] and health.json()["workers"] >= 1
    assert api.get("/readyz", headers={"Authorization": ""}).json() == {"redis": True}


def test_submit_status_logs_and_metrics_over_http(api, stack, unique):
    # Given a spec posted in PrimeHub's resource shape
    crd = {"apiVersion": "primehub.io/v1alpha1", "kind": "ImageSpec", "metadata": {"name": unique},
           "spec": {"baseImage": stack.busybox_base, "pullSecret": "private"}}
    answer = api.post("/builds", json=crd)
    assert answer.status_code == 202
    build_id = answer.json()["id"]
    # When it has been built
    wait_for(lambda: finished(api, build_id), "the build over HTTP", WAIT_S)
    # Then status, logs and metrics tell the same story as the CLI
    result = api.get(f"/builds/{build_id}").json()
    assert result["phase"] == "Succeeded" and result["image"].split("/")[-1].startswith(unique)
    assert "==> pushing" in api.get(f"/builds/{build_id}/logs").text
    events = api.get(f"/builds/{build_id}/logs", params={"follow": "true"}).text
    assert events.startswith("data: ") and events.endswith("event: end\ndata: Succeeded\n\n")
    metrics = api.get("/metrics").text
    assert 'imagebuilder_builds_finished_total{phase="Succeeded"}' in metrics
    assert 'imagebuilder_step_duration_seconds_count{step="pushing"}' in metrics


def test_live_logs_as_server_sent_events_end_with_the_final_phase(api, stack, unique):
    build_id = api.post("/builds", json=busybox(stack, unique), params={"force": "true"}).json()["id"]
    with api.stream("GET", f"/builds/{build_id}/logs", headers={"Accept": "text/event-stream"}) as events:
        assert events.headers["content-type"].startswith("text/event-stream")
        text = "".join(events.iter_text())
    assert "data: ==> building" in text and text.endswith("event: end\ndata: Succeeded\n\n")


def test_errors_have_clear_statuses(api, stack, unique):
    bad = api.post("/builds", json={**busybox(stack, unique), "packages": {"apt": ["jq; touch /x"]}})
    assert bad.status_code == 422 and "packages.apt[0]" in bad.json()["detail"]
    assert api.post("/builds", json=["not", "an", "object"]).status_code == 422
    assert api.get("/builds/nobody-submitted-this").status_code == 404
    assert api.delete("/builds/nobody-submitted-this").status_code == 404
    done = api.post("/builds", json=busybox(stack, unique)).json()["id"]
    wait_for(lambda: finished(api, done), "the build", WAIT_S)
    conflict = api.delete(f"/builds/{done}")
    assert conflict.status_code == 409 and "already ended" in conflict.json()["detail"]


def test_the_api_serves_from_several_processes_each_checking_tokens(stack):
    # Given `imagebuilder api --workers 2`
    process, url = start_api(stack, "two-processes", IDLE_DB, args=("--workers", "2"))
    try:
        # Then two server processes start, and whichever answers, a token is needed and a valid one works
        wait_for(lambda: process.log_path.read_text().count("Application startup complete.") == 2,
                 "two server processes", timeout_s=30)
        with httpx.Client(base_url=url, timeout=10) as http:
            for _ in range(10):
                assert http.get("/specs").status_code == 401
                assert http.get("/specs", headers=AUTH).status_code == 200
    finally:
        process.stop()


def test_feature_flag_off_answers_403_with_the_reason(stack):
    process, url = start_api(stack, "flagoff", IDLE_DB, PRIMEHUB_FEATURE_CUSTOM_IMAGE="false")
    try:
        answer = httpx.post(f"{url}/builds", json=busybox(stack, "off"), headers=AUTH)
        assert answer.status_code == 403 and "PRIMEHUB_FEATURE_CUSTOM_IMAGE=true" in answer.json()["detail"]
    finally:
        process.stop()


def test_openapi_is_served_and_schemathesis_finds_no_5xx_or_schema_violation(stack):
    # Given the API on a Redis database where no worker builds what the fuzzer submits
    process, url = start_api(stack, "fuzz", IDLE_DB)
    try:
        schema = httpx.get(f"{url}/openapi.json", headers=AUTH).json()
        paths = {"/builds", "/builds/{build_id}", "/builds/{build_id}/logs", "/healthz", "/readyz", "/metrics",
                 "/specs", "/specs/{name}", "/specs/{name}/builds", "/specs/{name}/history",
                 "/specs/{name}/schedule", "/schedules", "/hooks/registry", "/hooks/dockerhub/{token}"}
        assert paths <= set(schema["paths"])
        # When schemathesis exercises every operation
        done = subprocess.run(
            [sys.executable, "-m", "schemathesis.cli", "run", f"{url}/openapi.json", "--header",
             f"Authorization: Bearer {API_TOKEN}", "--checks", "not_a_server_error,response_schema_conformance",
             "--max-examples", "30", "--exclude-path", "/healthz", "--exclude-path", "/readyz"],
            capture_output=True, text=True, timeout=600,
        )
        # Then it finds nothing, having sent requests to the spec and schedule routes as well
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
        served = process.log_path.read_text()
        for route in ('"PUT /specs/', '"GET /specs/', '"DELETE /specs/', '"POST /specs/', '/schedule HTTP'):
            assert route in served, route
    finally:
        process.stop()


def test_a_redis_with_a_password_over_tls_works_end_to_end(stack, tmp_path, unique):
    # Given Redis that only speaks TLS and wants a password, and a worker and the API using it
    from devstack.services import RedisServer
    from tests.integration.conftest import start_worker
    from tests.integration.test_failures import cli

    secure = RedisServer(tmp_path / "redis-tls", password=f"RedisPw-{unique}", tls=True).start()
    url = secure.url()
    worker = start_worker(stack, f"tls{unique}", IMAGEBUILDER_REDIS_URL=url)
    process, api_url = start_api(stack, f"tls{unique}", IMAGEBUILDER_REDIS_URL=url)
    try:
        assert url.startswith("rediss://:RedisPw-")
        # When a spec is built through the CLI and read back over HTTP
        spec = tmp_path / "spec.json"
        spec.write_text(json.dumps(busybox(stack, unique)))
        done = cli(stack, "submit", str(spec), "--wait", "--json", IMAGEBUILDER_REDIS_URL=url)
        assert done.returncode == 0, done.stderr
        build_id = json.loads(done.stdout)["id"]
        answer = httpx.get(f"{api_url}/builds/{build_id}", headers=AUTH)
        # Then it succeeded, and neither the worker's log nor the API's shows the Redis password
        assert answer.status_code == 200 and answer.json()["phase"] == "Succeeded"
        assert httpx.get(f"{api_url}/healthz").json() == {"redis": True, "workers": 1}
        assert f"RedisPw-{unique}" not in worker.log_text + process.log_path.read_text() + done.stdout + done.stderr
    finally:
        process.stop()
        worker.process.stop()
        secure.stop()


def test_each_worker_serves_the_service_metrics_on_its_port(stack, unique):
    from devstack.services import free_port
    from tests.integration.conftest import start_worker

    port = free_port()
    worker = start_worker(stack, f"metrics{unique}", IDLE_DB, IMAGEBUILDER_METRICS_PORT=str(port))
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    finally:
        worker.process.stop()
    for name in ("imagebuilder_builds_finished", "imagebuilder_step_duration_seconds_bucket",
                 "imagebuilder_builds_in_progress", "imagebuilder_queue_depth", "imagebuilder_registry_errors"):
        assert name in text
