"""No webhook body makes a 5xx: a property-based test posts generated bodies (every registry's payload shape, with
any JSON type in any field) to both hook routes of a real `imagebuilder api`, and bodies nested 100,000 levels deep
are refused as bad input."""

from __future__ import annotations

import secrets

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devstack.stack import start_api
from tests.integration.conftest import AUTH

pytestmark = pytest.mark.integration
FUZZ_DB = 26  # no worker: what the hooks queue stays there
HOOK_TOKEN = "hook-" + secrets.token_hex(16)
EXAMPLES = 150

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | \
    st.text(max_size=30)
any_json = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
urls = st.sampled_from(["http://[", "http://[::1", "https://r.example:99999/v2/x", "http://\uff03/x", "//x",
                        "http:"]) | \
    st.builds("{}://{}/v2/{}".format, st.sampled_from(["http", "https", "ftp", ""]), st.text(max_size=20),
              st.text(max_size=20))
texts = st.sampled_from(["push", "pull", "127.0.0.1:5000", "base/debian", "1", "latest", "a" * 300, "x y", ""]) | \
    urls | any_json


def shaped(fields: dict) -> st.SearchStrategy:
    """A dict with any of these fields (each of its usual kind, or of any JSON type)."""
    return st.fixed_dictionaries({}, optional={name: kind | any_json for name, kind in fields.items()})


distribution_event = shaped({"action": texts, "target": shaped({"repository": texts, "tag": texts, "url": texts,
                                                                "mediaType": texts}),
                             "request": shaped({"host": texts})})
distribution = shaped({"events": st.lists(distribution_event | any_json, max_size=6)})
harbor = shaped({"type": st.just("PUSH_ARTIFACT") | texts,
                 "event_data": shaped({"resources": st.lists(shaped({"resource_url": texts, "tag": texts}) | any_json,
                                                             max_size=4)})})
docker_hub = shaped({"push_data": shaped({"tag": texts}), "repository": shaped({"repo_name": texts})})


@pytest.fixture(scope="module")
def hooks_url(stack):
    process, url = start_api(stack, "hook-inputs", FUZZ_DB, IMAGEBUILDER_WEBHOOK_TOKENS=HOOK_TOKEN)
    yield url
    process.stop()


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=distribution | harbor | any_json)
def test_any_body_of_a_registrys_shape_gets_202_or_400_never_5xx(hooks_url, body):
    answer = httpx.post(f"{hooks_url}/hooks/registry", json=body, headers={"Authorization": f"Bearer {HOOK_TOKEN}"})
    assert answer.status_code in (202, 400), (answer.status_code, answer.text)
    assert "detail" in answer.json() if answer.status_code == 400 else "checking" in answer.json()


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=docker_hub | any_json)
def test_any_body_of_docker_hubs_shape_gets_202_or_400_never_5xx(hooks_url, body):
    answer = httpx.post(f"{hooks_url}/hooks/dockerhub/{HOOK_TOKEN}", json=body)
    assert answer.status_code in (202, 400), (answer.status_code, answer.text)


@pytest.mark.parametrize("route", ["/hooks/registry", f"/hooks/dockerhub/{HOOK_TOKEN}", "/builds"])
def test_a_body_nested_100000_levels_deep_is_bad_input(hooks_url, route):
    # Given JSON nested 100,000 levels deep (200 KB, within every body bound), and a body that is not UTF-8
    deep = b"[" * 100_000 + b"]" * 100_000
    headers = {"Authorization": f"Bearer {HOOK_TOKEN}", "Content-Type": "application/json"}
    if route == "/builds":
        headers.update(AUTH)
    # When each is posted
    answers = [httpx.post(f"{hooks_url}{route}", content=body, headers=headers) for body in (deep, b"\xff{}")]
    # Then each is answered 400 saying why
    assert [a.status_code for a in answers] == [400, 400], [a.text for a in answers]
    assert all(a.json()["detail"] for a in answers)
