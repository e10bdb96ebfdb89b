"""What a real `imagebuilder api` answers on errors, and that its OpenAPI description says so: JSON `{"detail": ...}`
from the text routes too (the log and the metrics), and 400 for a JSON body that is not UTF-8 or nests too deeply."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from devstack.stack import start_api
from tests.integration.conftest import AUTH

pytestmark = pytest.mark.integration
ANSWERS_DB = 23  # no worker: nothing queued here is built
JSON = "application/json"
BODY_ROUTES = [("POST", "/builds"), ("PUT", "/specs/{name}"), ("PUT", "/specs/{name}/schedule")]
NOT_UTF8 = '{"name": "café", "baseImage": "debian:bookworm"}'.encode("latin-1")
NESTED_TOO_DEEPLY = b'{"name": "x", "packages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"  # well under 1 MiB


@pytest.fixture(scope="module")
def api_url(stack) -> Iterator[str]:
    process, url = start_api(stack, "error-answers", ANSWERS_DB)
    yield url
    process.stop()


@pytest.fixture(scope="module")
def schema(api_url) -> dict:
    return httpx.get(f"{api_url}/openapi.json", headers=AUTH).json()


def error_media_types(schema: dict, path: str, method: str = "get") -> dict[str, set[str]]:
    responses = schema["paths"][path][method]["responses"]
    return {status: set(answer.get("content", {})) for status, answer in responses.items() if int(status) >= 400}


def test_the_log_and_metrics_routes_document_their_errors_as_json(schema):
    # Given the OpenAPI description of the two routes whose own answer is text
    logs = error_media_types(schema, "/builds/{build_id}/logs")
    metrics = error_media_types(schema, "/metrics")
    # Then every error they document is JSON, and only JSON
    assert logs == {"401": {JSON}, "404": {JSON}, "422": {JSON}, "429": {JSON}, "503": {JSON}}
    assert metrics == {"401": {JSON}, "429": {JSON}, "503": {JSON}}
    # And the log route's 503 says when to come back
    assert "Retry-After" in schema["paths"]["/builds/{build_id}/logs"]["get"]["responses"]["503"]["headers"]


def test_the_log_and_metrics_routes_answer_errors_in_json(api_url):
    with httpx.Client(base_url=api_url, headers=AUTH, timeout=10) as http:
        answers = [http.get("/builds/nobody-submitted-this/logs"),
                   http.get("/builds/nobody-submitted-this/logs", params={"follow": "true"}),
                   http.get("/builds/x/logs", params={"follow": "not-a-bool"}),
                   http.get("/metrics", headers={"Authorization": "Bearer not-a-token"})]
    assert [a.status_code for a in answers] == [404, 404, 422, 401]
    for answer in answers:
        assert answer.headers["content-type"] == JSON and isinstance(answer.json()["detail"], str)


def test_every_json_body_route_documents_400(schema):
    for method, path in BODY_ROUTES:
        assert "400" in schema["paths"][path][method.lower()]["responses"], path


@pytest.mark.parametrize("body", [NOT_UTF8, NESTED_TOO_DEEPLY], ids=["not-utf8", "nested-too-deeply"])
@pytest.mark.parametrize(("method", "path"), BODY_ROUTES, ids=[path for _, path in BODY_ROUTES])
def test_a_body_not_utf8_or_nested_too_deeply_gets_400_in_json(api_url, method, path, body):
    # When a JSON body route is sent such a body
    answer = httpx.request(method, api_url + path.replace("{name}", "x"), content=body, timeout=30,
                           headers={**AUTH, "Content-Type": JSON})
    # Then it is refused as bad input, in the API's JSON shape, never a 5xx
    assert answer.status_code == 400 and answer.headers["content-type"] == JSON
    assert isinstance(answer.json()["detail"], str)
