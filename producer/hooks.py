"""Registry webhooks: what a push notification says was pushed, within the bounds of one notification and the
registries its token speaks for (the routes are producer/api/hooks.py).

`POST /hooks/registry` takes CNCF distribution's envelope of events and Harbor's PUSH_ARTIFACT event (its default
format); `POST /hooks/dockerhub/{token}` takes Docker Hub's push payload. The edge checks their tokens before a byte
of the body is read. A notification is only a hint: it names tags, and the worker checks each stored spec built on
one by a manifest HEAD before rebuilding it (worker/basewatch.py). Events other than tag pushes are ignored, and
answered 202 all the same: a registry retries whatever it is not answered 2xx for."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel

from core.errors import InvalidRequest
from core.reference import DOCKER_HUB, ImageReference, parse_reference
from core.submission import MAX_PUSHED_PER_TASK

HARBOR_PUSH = "PUSH_ARTIFACT"
# One notification costs a bounded amount of work: a registry sends one event per envelope (distribution) or one
# artifact per event (Harbor), Docker Hub one tag; past these bounds it is refused with 400, never split.
MAX_PUSHED_TAGS = MAX_PUSHED_PER_TASK
MAX_PUSHED_REPOSITORIES = 20


class HookAnswer(BaseModel):
    """202: the tags whose stored specs will be checked; how many events were not tag pushes; and how many tag
    pushes named a registry the token does not speak for (ignored)."""

    checking: list[str]
    ignored: int
    out_of_scope: int = 0


def pushed_in_registry_event(body: Any) -> tuple[list[ImageReference], int]:
    """The tags pushed according to a distribution envelope or a Harbor event; and how many events said
    something else (pulls, blob pushes, pushes by digest, other event types)."""
    if isinstance(body, dict) and "events" in body:
        return _found(_distribution_push(event) for event in _list(body["events"], "events"))
    if isinstance(body, dict) and isinstance(body.get("type"), str):
        if body["type"] != HARBOR_PUSH:
            return [], 1
        resources = _list(_path(body, "event_data", "resources", default=[]), "event_data.resources")
        return _found(_harbor_push(resource) for resource in resources)
    raise InvalidRequest("body: neither a registry's envelope of events (`events`) nor a Harbor event (`type`)")


def pushed_in_docker_hub_event(body: Any) -> tuple[list[ImageReference], int]:
    """The tag Docker Hub's push payload names (`repository.repo_name`, `push_data.tag`)."""
    repository, tag = _path(body, "repository", "repo_name"), _path(body, "push_data", "tag")
    if not isinstance(repository, str) or not isinstance(tag, str):
        raise InvalidRequest("body: not a Docker Hub push payload: `repository.repo_name` and `push_data.tag` "
                             "must be strings")
    return _found([_reference(f"{DOCKER_HUB}/{repository}:{tag}")])


def bounded(pushed: list[ImageReference]) -> list[ImageReference]:
    """The pushed tags, if one check may take them; InvalidRequest naming the bound otherwise."""
    if len(pushed) > MAX_PUSHED_TAGS:
        raise InvalidRequest(f"body: names {len(pushed)} pushed tags; one notification may name at most "
                             f"{MAX_PUSHED_TAGS}")
    if (repositories := len({reference.name for reference in pushed})) > MAX_PUSHED_REPOSITORIES:
        raise InvalidRequest(f"body: names {repositories} repositories; one notification may name at most "
                             f"{MAX_PUSHED_REPOSITORIES}")
    return pushed


def in_scope(pushed: list[ImageReference], hosts: frozenset[str]) -> list[ImageReference]:
    """The pushes on registries the token speaks for (every one, for a token without hosts)."""
    return [reference for reference in pushed if not hosts or reference.registry in hosts]


def _distribution_push(event: Any) -> ImageReference | None:
    """A manifest pushed by tag: `request.host` (else the host of `target.url`), `target.repository`, `target.tag`."""
    repository, tag = _text(event, "target", "repository"), _text(event, "target", "tag")
    if _path(event, "action") != "push" or not repository or not tag:
        return None
    host = _text(event, "request", "host") or _host_of(_text(event, "target", "url"))
    return _reference(f"{host}/{repository}:{tag}") if host else None


def _host_of(url: str) -> str:
    """The URL's host[:port]; "" for text that is no URL (`http://[`)."""
    try:
        return urlsplit(url).netloc
    except ValueError:
        return ""


def _harbor_push(resource: Any) -> ImageReference | None:
    """`resource_url` is host/project/repository:tag, or …@digest for a push by digest (no tag: ignored)."""
    url = _text(resource, "resource_url")
    reference = _reference(url) if url else None
    return reference if reference is not None and reference.tag and not reference.digest else None


def _reference(text: str) -> ImageReference | None:
    """The normalised reference, or None for one that cannot be an image's (nothing is built on it)."""
    try:
        return parse_reference(text)
    except ValueError:
        return None


def _found(references: Iterator[ImageReference | None] | list[ImageReference | None]) -> tuple[list, int]:
    found = list(references)
    pushed = list(dict.fromkeys(r for r in found if r is not None))  # a tag once, in the order met
    return pushed, sum(r is None for r in found)


def _path(value: Any, *keys: str, default: Any = None) -> Any:
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            return default
        value = value[key]
    return value


def _text(value: Any, *keys: str) -> str:
    """The string at that path; "" for anything else (absent, null, a number, a list)."""
    found = _path(value, *keys)
    return found if isinstance(found, str) else ""


def _list(value: Any, where: str) -> list:
    if not isinstance(value, list):
        raise InvalidRequest(f"body: `{where}` must be a list, not {type(value).__name__}")
    return value


def json_body(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        raise InvalidRequest("body: not JSON (or not UTF-8)") from None
    except RecursionError:
        raise InvalidRequest("body: JSON nested too deeply") from None
