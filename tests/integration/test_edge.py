"""The HTTP API's edge, tried as an attacker would: no work before authentication, bounded bodies, no 5xx from
input, server-sent events that build output cannot forge, and readiness that survives workers scaled to zero."""

from __future__ import annotations

import io
import json
import socket
import tarfile
import time

import docker
import httpx
import pytest

from devstack.baseimage import BUSYBOX_IMAGE, push
from devstack.services import free_port
from devstack.stack import PULL_PASSWORD, PULL_USER, start_api
from tests.integration.conftest import AUTH
from tests.integration.helpers import wait_for
from tests.integration.test_builds import WAIT_S

pytestmark = pytest.mark.integration
IDLE_DB = 10  # no worker builds there (the metrics test's worker only passes through)
WORKERLESS_DB = 2  # no worker ever starts on it, so none was seen there in the last half minute either
ANSWER_WITHIN_S = 2.0
MAX_BODY_BYTES = 1 << 20


def raw_request(url: str, head: str, body: bytes = b"") -> tuple[float, str]:
    """Send a request's head (and maybe part of its body) over a plain socket; seconds to the answer, status line."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        started = time.monotonic()
        answer = connection.recv(65536).decode(errors="replace")
    return time.monotonic() - started, answer.split("\r\n", 1)[0]


def test_a_request_without_a_valid_token_is_refused_before_its_body_is_read(api):
    url = str(api.base_url).rstrip("/")
    for authorization in ("", "Authorization: Bearer not-a-token\n", "Authorization: Basic dXNlcjpwdw==\n"):
        # Given a request that announces a 47 MiB body and sends none of it
        head = f"POST /builds HTTP/1.1\nHost: x\n{authorization}Content-Type: application/json\n" \
               f"Content-Length: {47 << 20}\n"
        # When it is sent, Then the 401 comes at once: the server never waited for the body
        took_s, status = raw_request(url, head)
        assert status == "HTTP/1.1 401 Unauthorized" and took_s < ANSWER_WITHIN_S
    # And malformed JSON without a token is a 401 too, never parsed into a 422
    for path in ("/builds", "/specs/x", "/specs/x/schedule"):
        answer = httpx.request("PUT" if path.startswith("/specs") else "POST", f"{url}{path}", content=b"{bad",
                               headers={"Content-Type": "application/json"})
        assert answer.status_code == 401 and answer.headers["www-authenticate"] == "Bearer", path


def test_a_body_past_the_limit_is_refused_with_413_declared_or_chunked(api):
    url = str(api.base_url).rstrip("/")
    token = AUTH["Authorization"]
    # Given an authorised request that declares more than IMAGEBUILDER_API_MAX_BODY_BYTES, sending none of it
    took_s, status = raw_request(url, f"POST /builds HTTP/1.1\nHost: x\nAuthorization: {token}\n"
                                      f"Content-Length: {MAX_BODY_BYTES + 1}\n")
    # Then it is refused at once
    assert status == "HTTP/1.1 413 Request Entity Too Large" and took_s < ANSWER_WITHIN_S
    # And a chunked body without a Content-Length is cut off once it passes the limit
    chunk = b"x" * 65536
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(MAX_BODY_BYTES // len(chunk) + 2))
    _, status = raw_request(url, f"POST /builds HTTP/1.1\nHost: x\nAuthorization: {token}\n"
                                 "Transfer-Encoding: chunked\n", chunked)
    assert status == "HTTP/1.1 413 Request Entity Too Large"
    # While a body just under the limit is read and judged on its content
    body = json.dumps({"name": "x", "baseImage": "debian", "packages": {"apt": ["jq"] * ((MAX_BODY_BYTES - 100) // 6)}})
    assert MAX_BODY_BYTES - 1000 < len(body) <= MAX_BODY_BYTES
    under = api.post("/builds", content=body, headers={"Content-Type": "application/json"})
    assert under.status_code == 422 and "packages.apt: List should have at most 1000 items" in under.json()["detail"]


def test_the_api_docs_need_a_token_unless_made_public(api, stack):
    url = str(api.base_url).rstrip("/")
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert httpx.get(f"{url}{path}").status_code == 401
        assert httpx.get(f"{url}{path}", headers=AUTH).status_code == 200
    process, public = start_api(stack, "publicdocs", IDLE_DB, IMAGEBUILDER_API_PUBLIC_DOCS="true")
    try:
        assert httpx.get(f"{public}/openapi.json").status_code == 200
        assert httpx.get(f"{public}/builds/x").status_code == 401
    finally:
        process.stop()


def test_readiness_needs_redis_only_so_workers_may_scale_to_zero(stack):
    # Given the API on a database no worker serves, and another whose Redis is not there
    idle, idle_url = start_api(stack, "ready-idle", WORKERLESS_DB)
    gone, gone_url = start_api(stack, "ready-gone", IMAGEBUILDER_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    try:
        # Then the first is ready to queue builds, while its health says no worker is there
        assert httpx.get(f"{idle_url}/readyz").status_code == 200
        health = httpx.get(f"{idle_url}/healthz")
        assert health.status_code == 503 and health.json() == {"redis": True, "workers": 0}
        # And without Redis nothing is ready
        ready = httpx.get(f"{gone_url}/readyz")
        assert ready.status_code == 503 and ready.json() == {"redis": False}
        assert httpx.get(f"{gone_url}/builds/x", headers=AUTH).status_code == 503
    finally:
        idle.stop()
        gone.stop()


def test_hostile_input_is_answered_4xx_never_5xx(api, stack, unique):
    # Given a stored spec to aim at
    assert api.put(f"/specs/{unique}", json={"baseImage": stack.busybox_base, "pullSecret": "private"}).is_success
    resource = {"apiVersion": "primehub.io/v1alpha1", "kind": "ImageSpec", "spec": {"baseImage": "debian"}}
    deep = "[" * 50_000 + "]" * 50_000
    cases = [
        ("PUT", f"/specs/{unique}", {"json": {**resource, "metadata": [1]}}, 422, "metadata: must be an object"),
        ("PUT", f"/specs/{unique}", {"json": {**resource, "metadata": "m"}}, 422, "metadata: must be an object"),
        ("POST", "/builds", {"json": {**resource, "metadata": {"name": "x"}, "spec": [1]}}, 422, "spec: must be"),
        ("PUT", f"/specs/{unique}/schedule", {"json": {"cron": "0 0 30 2 *"}}, 422, "never matches"),
        ("PUT", f"/specs/{unique}/schedule", {"json": {"cron": "0 0 29 2 1"}}, 422, "never matches"),
        ("PUT", f"/specs/{unique}/schedule", {"json": {"every_s": 10 ** 15}}, 422, "every_s"),
        ("PUT", f"/specs/{unique}/schedule", {"json": {"cron": "* * * * *", "tz": "../../etc/passwd"}}, 422, "tz"),
        ("POST", "/builds", {"content": deep, "headers": {"Content-Type": "application/json"}}, None, ""),
        ("POST", "/builds", {"json": {"name": "x", "baseImage": "a" * 5000}}, 422, "baseImage"),
    ]
    for method, path, request, status, words in cases:
        # When each is sent
        started = time.monotonic()
        answer = api.request(method, path, **request)
        # Then it gets a 4xx naming what is wrong, at once
        assert answer.status_code < 500 and (status is None or answer.status_code == status), (path, answer.text)
        assert words in answer.json()["detail"] and time.monotonic() - started < ANSWER_WITHIN_S, (path, answer.text)


def base_whose_apt_get_prints(stack, repository: str, output: str) -> str:
    """A BusyBox base in the private registry (with a root user) whose `apt-get` prints `output` and fails."""
    engine = docker.from_env()
    files = {"bin/apt-get": (f"#!/bin/sh\nprintf '%s' '{output}'\nexit 1\n", 0o755),
             "etc/passwd": ("root:x:0:0:root:/root:/bin/sh\n", 0o644)}
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        for name, (text, mode) in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(text.encode()), mode
            tar.addfile(info, io.BytesIO(text.encode()))
    container = engine.containers.create(BUSYBOX_IMAGE, "true")
    container.put_archive("/", archive.getvalue())
    container.commit(repository=repository, tag="1")
    container.remove()
    push(engine, f"{repository}:1", PULL_USER, PULL_PASSWORD)
    return f"{repository}:1"


def sse_events(text: str) -> list[list[str]]:
    """The events of a text/event-stream, each as its lines (the stream ends with a blank line)."""
    assert text.endswith("\n\n")
    return [event.split("\n") for event in text[:-2].split("\n\n")]


def test_build_output_cannot_forge_server_sent_events(api, stack, unique):
    # Given a build whose RUN step prints SSE fields, and fails so that its error repeats them in one entry
    hostile = "event: end\ndata: Succeeded\nid: 9\nretry: 1\n: a comment\n"
    base = base_whose_apt_get_prints(stack, f"{stack.private_registry.host}/sse-{unique}/base", hostile)
    spec = {"name": unique, "baseImage": base, "pullSecret": "private", "packages": {"apt": ["jq"]}}
    build_id = api.post("/builds", json=spec).json()["id"]
    # When its log is read live through the server-sent events route
    with api.stream("GET", f"/builds/{build_id}/logs", headers={"Accept": "text/event-stream"}) as stream:
        text = "".join(stream.iter_text())
    wait_for(lambda: api.get(f"/builds/{build_id}").json()["phase"] == "Failed", "the build to fail", WAIT_S)
    # Then every event but the last holds data fields only, and the last is the one true end
    events = sse_events(text)
    assert all(line.startswith("data: ") for event in events[:-1] for line in event), text
    assert events[-1] == ["event: end", "data: Failed"]
    # And the printed lines arrived as data, both as log lines and inside the multi-line error
    data = [line.removeprefix("data: ") for event in events[:-1] for line in event]
    assert {"event: end", "data: Succeeded", "id: 9", "retry: 1"} <= set(data), text
    assert any(len(event) > 4 and "id: 9" in "\n".join(event) for event in events[:-1])
