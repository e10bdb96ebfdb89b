"""Guessing is throttled and tokens are long: a client whose credentials fail too often is answered 429 with
Retry-After (API, webhooks and console sign-in alike) without slowing anyone else; tokens too short to withstand
guessing stop the API at start; and no spelling of Docker Hub's hook path writes its token to the access log. A
real `imagebuilder api`, spoken to from several loopback addresses."""

from __future__ import annotations

import secrets
import subprocess

import httpx
import pytest

from devstack.stack import API_TOKEN, IMAGEBUILDER, start_api
from tests.integration.conftest import AUTH
from tests.integration.helpers import wait_for

pytestmark = pytest.mark.integration
GUESSING_DB = 31
MOST = 10
HOOK_TOKEN = "hook-" + secrets.token_hex(16)


@pytest.fixture(scope="module")
def guarded(stack):
    """The API with the default bound on failed credentials (the suite's other APIs lift it)."""
    process, url = start_api(stack, "guessing", GUESSING_DB, IMAGEBUILDER_AUTH_MAX_FAILURES=str(MOST),
                             IMAGEBUILDER_WEBHOOK_TOKENS=HOOK_TOKEN)
    yield process, url
    process.stop()


def from_address(url: str, address: str, **kwargs) -> httpx.Client:
    """A client whose requests come from `address` (any 127.x.y.z is this machine's loopback)."""
    return httpx.Client(base_url=url, transport=httpx.HTTPTransport(local_address=address), timeout=10, **kwargs)


def test_repeated_wrong_tokens_get_429_with_retry_after_and_other_clients_are_not_slowed(guarded):
    _, url = guarded
    with from_address(url, "127.0.0.3") as guesser, from_address(url, "127.0.0.4") as other:
        # When one client sends wrong bearer tokens to the API
        statuses = [guesser.get("/builds/x", headers={"Authorization": f"Bearer guess-{i}"}).status_code
                    for i in range(MOST)]
        # Then the failures up to the bound are 401 and, from the bound on, even a valid token gets 429
        assert statuses == [401] * (MOST - 1) + [429]
        refused = guesser.get("/builds/x", headers=AUTH)
        assert refused.status_code == 429 and 0 < int(refused.headers["retry-after"]) <= 60
        assert "try again in" in refused.json()["detail"]
        # And another client is served as ever, and a request without any credential counts for nothing
        assert other.get("/builds/x", headers=AUTH).status_code == 404
        assert [other.get("/builds/x").status_code for _ in range(MOST + 2)] == [401] * (MOST + 2)
        assert other.get("/builds/x", headers=AUTH).status_code == 404


def test_wrong_webhook_tokens_get_429_and_a_valid_one_always_passes(guarded):
    _, url = guarded
    hook = {"Authorization": f"Bearer {HOOK_TOKEN}"}
    with from_address(url, "127.0.0.8") as sender:
        # Given a registry sending from an address someone else shares, who guesses there at both hook routes
        statuses = [sender.post("/hooks/registry", json={}, headers={"Authorization": f"Bearer g{i}"}).status_code
                    for i in range(MOST - 1)]
        statuses.append(sender.post("/hooks/dockerhub/guess", json={}).status_code)
        # Then the guesses are 401 up to the bound and 429 from it, with Retry-After
        assert statuses == [401] * (MOST - 1) + [429]
        assert sender.post("/hooks/dockerhub/guess", json={}).headers["retry-after"].isdigit()
        # And the registry's real notifications still pass, and the API's door is not the hooks'
        assert sender.post("/hooks/registry", json={"events": []}, headers=hook).status_code == 202
        assert sender.get("/builds/x", headers=AUTH).status_code == 404


def test_repeated_failed_sign_ins_get_429_on_the_sign_in_page(guarded):
    _, url = guarded
    with from_address(url, "127.0.0.5") as browser:
        browser.get("/ui/login")
        form = {"csrftoken": browser.cookies["csrftoken"]}
        statuses = [browser.post("/ui/login", data={**form, "token": f"wrong-{i}"}).status_code for i in range(MOST)]
        refused = browser.post("/ui/login", data={**form, "token": API_TOKEN})
    assert statuses == [401] * (MOST - 1) + [429]
    assert refused.status_code == 429 and refused.headers["retry-after"].isdigit()
    assert "Too many failed sign-ins" in refused.text and "imagebuilder_session" not in refused.headers.get(
        "set-cookie", "")


@pytest.mark.parametrize(("setting", "value"), [("IMAGEBUILDER_API_TOKENS", "short-token-1"),
                                                ("IMAGEBUILDER_WEBHOOK_TOKENS", "tiny-hook")])
def test_a_token_shorter_than_16_characters_stops_the_api_at_start(stack, setting, value):
    env = stack.process_env(GUESSING_DB, **{setting: value})
    started = subprocess.run([str(IMAGEBUILDER), "api", "--port", "1"], env=env, capture_output=True, text=True,
                             timeout=60)
    assert started.returncode == 2
    assert f"{setting}: 1 of its 1 tokens are shorter than 16 characters" in started.stderr, started.stderr
    assert value not in started.stderr + started.stdout and "Traceback" not in started.stderr


def test_a_webhook_token_opens_only_its_hooks_and_the_api_token_none_of_them(guarded):
    _, url = guarded
    with from_address(url, "127.0.0.6") as http:
        hook = {"Authorization": f"Bearer {HOOK_TOKEN}"}
        assert http.post("/hooks/registry", json={"events": []}, headers=hook).status_code == 202
        assert http.post(f"/hooks/dockerhub/{HOOK_TOKEN}", json={"push_data": {"tag": "1"},
                                                                 "repository": {"repo_name": "a/b"}}).status_code == 202
        assert http.post("/hooks/registry", json={"events": []}, headers=AUTH).status_code == 401
        assert http.get("/builds/x", headers=hook).status_code == 401
        assert http.post(f"/hooks/dockerhub/{HOOK_TOKEN}/more", json={}).status_code == 401
        assert http.post("/hooks/other", json={}, headers=hook).status_code == 401
        over = http.post("/hooks/registry", content=b"x" * (256 * 1024 + 1), headers=hook)
        assert over.status_code == 413


@pytest.mark.parametrize("path", ["//hooks/dockerhub/{t}", "/Hooks/dockerhub/{t}", "/hooks//dockerhub/{t}",
                                  "/hooks/DockerHub/{t}", "/hooks/dockerhub/{t}?x=1", "/hooks/dockerhub//{t}"])
def test_no_spelling_of_the_docker_hub_path_writes_its_token_to_the_access_log(guarded, path):
    process, url = guarded
    # Given a token-like secret in a path spelt one of many ways
    secret = "T" + secrets.token_hex(12)
    logged = process.log_path.read_text().count("[token hidden]")
    # When it is posted (whatever the answer)
    with from_address(url, "127.0.0.7") as http:
        http.post(path.format(t=secret), json={})
    # Then the access log has the request, and never the secret
    wait_for(lambda: process.log_path.read_text().count("[token hidden]") > logged, "the access log line", 10)
    assert secret not in process.log_path.read_text()
