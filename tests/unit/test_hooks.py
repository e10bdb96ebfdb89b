"""Webhooks: what each registry's payload says was pushed, the bounds of one notification, token scopes, and the
access log that never shows Docker Hub's token. (The edge's checks, over Redis, are in tests/integration.)"""

from __future__ import annotations

import logging

import pytest

from config.settings import Settings
from core.errors import InvalidRequest
from core.imagechain import ImageChains
from core.reference import parse_reference
from core.stores.specs import base_key
from producer.edge import HookTokensHidden
from producer.hooks import (
    MAX_PUSHED_REPOSITORIES,
    MAX_PUSHED_TAGS,
    bounded,
    in_scope,
    json_body,
    pushed_in_docker_hub_event,
    pushed_in_registry_event,
)

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
    ([1, 2], "neither a registry's envelope"), ({"events": "x"}, "`events` must be a list"),
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


# -- bounds and scopes -----------------------------------------------------------------------------------------
def test_a_notification_past_its_bounds_is_refused_naming_the_bound():
    # Given pushes of 101 tags of one repository, and of one tag in each of 21 repositories
    many_tags = [parse_reference(f"registry.example/base:t{i}") for i in range(MAX_PUSHED_TAGS + 1)]
    many_repositories = [parse_reference(f"registry.example/r{i}:1") for i in range(MAX_PUSHED_REPOSITORIES + 1)]
    # Then each is refused naming its bound, and one just within both is taken whole
    with pytest.raises(InvalidRequest, match=f"at most {MAX_PUSHED_TAGS}$"):
        bounded(many_tags)
    with pytest.raises(InvalidRequest, match=f"at most {MAX_PUSHED_REPOSITORIES}$"):
        bounded(many_repositories)
    assert bounded(many_tags[:MAX_PUSHED_TAGS]) == many_tags[:MAX_PUSHED_TAGS]


def test_a_scoped_token_takes_pushes_on_its_own_registries_only():
    pushed = [parse_reference(text) for text in ("registry.example/a:1", "other.example/b:1", "python:3.12")]
    assert in_scope(pushed, frozenset()) == pushed
    assert [str(r) for r in in_scope(pushed, frozenset({"registry.example", "docker.io"}))] == [
        "registry.example/a:1", "docker.io/library/python:3.12"]


@pytest.mark.parametrize("body", [
    {"type": "PUSH_ARTIFACT", "event_data": {"resources": None}},
    {"type": "PUSH_ARTIFACT", "event_data": {"resources": 5}},
    {"events": None}, {"events": {"a": 1}},
])
def test_a_structural_field_of_the_wrong_type_is_refused_naming_it(body):
    with pytest.raises(InvalidRequest, match="must be a list"):
        pushed_in_registry_event(body)


@pytest.mark.parametrize("event", [
    {"action": "push", "target": {"repository": ["base"], "tag": "1"}, "request": {"host": "r.example"}},
    {"action": "push", "target": {"repository": "base", "tag": 5}, "request": {"host": "r.example"}},
    {"action": "push", "target": {"repository": "base", "tag": "1"}, "request": {"host": {"x": 1}}},
    {"action": "push", "target": None}, {"action": ["push"]}, None, 3, "push",
    {"action": "push", "target": {"repository": "base", "tag": "1", "url": "http://["}},
    {"action": "push", "target": {"repository": "base", "tag": "1", "url": "http://\uff03/v2/base"}},
])
def test_an_event_with_a_field_of_another_type_is_ignored(event):
    assert texts(pushed_in_registry_event({"events": [event]})) == ([], 1)


def test_json_nested_past_the_parsers_depth_is_bad_input():
    with pytest.raises(InvalidRequest, match="nested too deeply"):
        json_body(b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(InvalidRequest, match="not JSON"):
        json_body(b"\xff\xfe{}")


def test_the_access_log_shows_the_docker_hub_hook_without_its_token(caplog):
    # Given uvicorn's access logger with the filter the API installs
    logger = logging.getLogger("test.access")
    logger.addFilter(HookTokensHidden())
    # When a Docker Hub notification is logged the way uvicorn logs requests
    with caplog.at_level(logging.INFO, logger="test.access"):
        logger.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5555", "POST", "/hooks/dockerhub/s3cret?x=1", "1.1", 202)
    # Then the path is there and the token is not
    assert "/hooks/dockerhub/[token hidden]" in caplog.text and "s3cret" not in caplog.text


@pytest.mark.parametrize("path", ["//hooks/dockerhub/s3cret", "/Hooks/dockerhub/s3cret", "/hooks//dockerhub/s3cret",
                                  "/hooks/DOCKERHUB//s3cret/x", "/hooks/dockerhub/s3cret?a=b"])
def test_no_spelling_of_the_docker_hub_path_shows_its_token(path, caplog):
    logger = logging.getLogger("test.access.spellings")
    logger.addFilter(HookTokensHidden())
    with caplog.at_level(logging.INFO, logger="test.access.spellings"):
        logger.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5555", "POST", path, "1.1", 401)
    assert "s3cret" not in caplog.text and "[token hidden]" in caplog.text


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
