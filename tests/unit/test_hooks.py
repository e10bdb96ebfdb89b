"""Webhooks: what each registry's payload says was pushed, the edge's webhook tokens and bound, and the access
log that never shows Docker Hub's token."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

import pytest

from config.settings import Settings
from producer.console.sessions import Sessions
from producer.edge import BearerTokens, Edge, HookTokensHidden
from producer.hooks import pushed_in_docker_hub_event, pushed_in_registry_event
from worker.errors import InvalidRequest
from worker.imagechain import ImageChains
from worker.reference import parse_reference
from worker.specstore import base_key

MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


def distribution_event(action="push", tag="1", media_type=MANIFEST, host="registry.example:5000"):
    """One event as CNCF distribution sends it in its envelope."""
    return {"id": "e1", "timestamp": "2026-11-28T21:00:00Z", "action": action,
            "target": {"mediaType": media_type, "size": 528, "digest": "sha256:" + "a" * 64, "length": 528,
                       "repository": "base/debian", "tag": tag,
                       "url": f"http://{host}/v2/base/debian/manifests/sha256:{'a' * 64}"},
            "request": {"id": "r1", "addr": "10.0.0.9:51234", "host": host, "method": "PUT",
                        "useragent": "docker/20.10"},
            "actor": {"name": "pusher"}, "source": {"addr": "registry-0:5000", "instanceID": "i1"}}


def harbor_event(resource_url="harbor.example/library/debian:12", kind="PUSH_ARTIFACT"):
    return {"type": kind, "occur_at": 1764363600, "operator": "admin",
            "event_data": {"resources": [{"digest": "sha256:" + "b" * 64, "tag": "12", "resource_url": resource_url}],
                           "repository": {"date_created": 1764363000, "name": "debian", "namespace": "library",
                                          "repo_full_name": "library/debian", "repo_type": "private"}}}


def texts(found):
    pushed, ignored = found
    return [str(reference) for reference in pushed], ignored


def test_a_registry_envelope_gives_the_tags_pushed_and_counts_every_other_event():
    # Given an envelope with a manifest pushed by tag, a blob push (no tag), a pull, and the same push again
    body = {"events": [distribution_event(), distribution_event(tag="", media_type="application/octet-stream"),
                       distribution_event(action="pull"), distribution_event()]}
    # When it is read
    # Then the tag is named once, with the host the pusher used, and the blob push and the pull are ignored
    assert texts(pushed_in_registry_event(body)) == (["registry.example:5000/base/debian:1"], 2)


def test_a_push_event_without_a_request_host_takes_the_host_of_its_target_url():
    event = distribution_event()
    del event["request"]
    assert texts(pushed_in_registry_event({"events": [event]})) == (["registry.example:5000/base/debian:1"], 0)


def test_harbor_push_artifact_gives_its_resource_url_and_a_push_by_digest_or_another_type_is_ignored():
    assert texts(pushed_in_registry_event(harbor_event())) == (["harbor.example/library/debian:12"], 0)
    by_digest = harbor_event(resource_url="harbor.example/library/debian@sha256:" + "b" * 64)
    assert texts(pushed_in_registry_event(by_digest)) == ([], 1)
    assert texts(pushed_in_registry_event(harbor_event(kind="PULL_ARTIFACT"))) == ([], 1)


def test_docker_hub_names_are_normalised_so_they_match_bases_written_either_way():
    # Given Docker Hub's push payload for library/python:3.12
    body = {"callback_url": "https://registry.hub.docker.com/u/library/python/hook/x/",
            "push_data": {"pushed_at": 1764363600, "pusher": "someone", "tag": "3.12"},
            "repository": {"repo_name": "library/python", "name": "python", "namespace": "library"}}
    pushed, _ = pushed_in_docker_hub_event(body)
    # Then it is the same index key as a base written `python:3.12` or `docker.io/library/python:3.12`
    assert [str(r) for r in pushed] == ["docker.io/library/python:3.12"]
    assert base_key(pushed[0]) == base_key(parse_reference("python:3.12")) == \
        base_key(parse_reference("index.docker.io/library/python:3.12"))


@pytest.mark.parametrize(("body", "field"), [
    ([1, 2], "neither a registry's envelope"), ({"events": "x"}, "neither a registry's envelope"),
    ({"type": 3}, "neither a registry's envelope"),
])
def test_a_body_of_another_shape_is_refused_naming_what_was_expected(body, field):
    with pytest.raises(InvalidRequest, match=field):
        pushed_in_registry_event(body)


def test_a_docker_hub_body_without_its_repository_or_tag_is_refused_naming_them():
    with pytest.raises(InvalidRequest, match=r"repository.repo_name.*push_data.tag"):
        pushed_in_docker_hub_event({"push_data": {"tag": "1"}, "repository": {"name": "x"}})


def test_an_event_naming_no_image_is_ignored_not_refused():
    # A registry retries any notification it is not answered 2xx for: one odd event must not stall its queue
    event = distribution_event(host="not a host")
    assert texts(pushed_in_registry_event({"events": [event]})) == ([], 1)


# -- the edge ----------------------------------------------------------------------------------------------------
def call_edge(path: str, *, headers=(), body=b"{}", max_hook_body_bytes=1024):
    """Send one request through the Edge to an app that answers 202 with the body it got; the status, and
    whether the app ran."""
    ran, sent = [], []

    async def app(scope, receive, send):
        message = await receive()
        ran.append(message["body"])
        await send({"type": "http.response.start", "status": 202, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        sent.append(message)

    edge = Edge(app, tokens=BearerTokens(["api-token"]), sessions=Sessions(["api-token"], 3600),
                max_body_bytes=1 << 20, public_docs=False, hook_tokens=BearerTokens(["hook-token"]),
                max_hook_body_bytes=max_hook_body_bytes)
    scope = {"type": "http", "method": "POST", "path": path, "headers": list(headers)}
    run_apart(edge(scope, receive, send))
    return sent[0]["status"], bool(ran)


def run_apart(coroutine):
    """Run a coroutine on a loop of its own in another thread: a browser test's loop may be running in this one."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def test_the_registry_hook_takes_only_a_webhook_token_as_bearer_and_checks_it_before_the_body():
    assert call_edge("/hooks/registry", headers=[(b"authorization", b"Bearer hook-token")]) == (202, True)
    for headers in ([], [(b"authorization", b"Bearer api-token")], [(b"authorization", b"Bearer hook-tokenx")],
                    [(b"authorization", b"hook-token")]):
        assert call_edge("/hooks/registry", headers=headers) == (401, False), headers


def test_a_webhook_token_opens_no_api_route():
    assert call_edge("/builds", headers=[(b"authorization", b"Bearer hook-token")]) == (401, False)
    assert call_edge("/builds", headers=[(b"authorization", b"Bearer api-token")]) == (202, True)


def test_the_docker_hub_hook_takes_its_token_in_the_path_and_no_other_hook_path_is_open():
    assert call_edge("/hooks/dockerhub/hook-token") == (202, True)
    assert call_edge("/hooks/dockerhub/wrong") == (401, False)
    assert call_edge("/hooks/dockerhub/hook-token/more") == (401, False)
    assert call_edge("/hooks/other", headers=[(b"authorization", b"Bearer hook-token")]) == (401, False)


def test_a_hook_body_over_its_bound_is_refused_413_and_the_route_never_runs():
    headers = [(b"authorization", b"Bearer hook-token"), (b"content-length", b"2048")]
    assert call_edge("/hooks/registry", headers=headers, body=b"x" * 2048) == (413, False)


def test_without_webhook_tokens_every_hook_is_refused():
    async def run():
        sent = []

        async def send(message):
            sent.append(message)

        edge = Edge(None, tokens=BearerTokens(["t"]), sessions=Sessions(["t"], 3600), max_body_bytes=1024,
                    public_docs=False)
        await edge({"type": "http", "method": "POST", "path": "/hooks/dockerhub/x", "headers": []}, None, send)
        return sent[0]["status"]

    assert run_apart(run()) == 401


def test_the_access_log_shows_the_docker_hub_hook_without_its_token(caplog):
    # Given uvicorn's access logger with the filter the API installs
    logger = logging.getLogger("test.access")
    logger.addFilter(HookTokensHidden())
    # When a Docker Hub notification is logged the way uvicorn logs requests
    with caplog.at_level(logging.INFO, logger="test.access"):
        logger.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5555", "POST", "/hooks/dockerhub/s3cret?x=1", "1.1", 202)
    # Then the path is there and the token is not
    assert "/hooks/dockerhub/[token hidden]" in caplog.text and "s3cret" not in caplog.text


# -- image chains (the pure part) -----------------------------------------------------------------------------
def chains(**settings) -> ImageChains:
    return ImageChains(None, Settings(_env_file=None, **settings))


def test_image_chains_find_the_spec_that_builds_a_base_from_the_settings_they_are_given():
    by_prefix = chains(PRIMEHUB_CUSTOM_IMAGE_REPO_PREFIX="registry.example/team")
    assert by_prefix.builder_of(parse_reference("registry.example/team/parent:0123abcd")) == "parent"
    on_hub = chains(PRIMEHUB_CUSTOM_IMAGE_REPO_PREFIX="myorg")
    assert on_hub.builder_of(parse_reference("docker.io/myorg/parent:1")) == "parent"
    single = chains(IMAGEBUILDER_PUSH_REPO="registry.example/all/images")
    assert single.builder_of(parse_reference("registry.example/all/images:my-parent-0123abcd")) == "my-parent"
