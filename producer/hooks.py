"""Registry webhooks: what a push notification says was pushed, and the routes that take them.

`POST /hooks/registry` takes CNCF distribution's envelope of events and Harbor's PUSH_ARTIFACT event (its default
format); `POST /hooks/dockerhub/{token}` takes Docker Hub's push payload. The edge checks their tokens before a byte
of the body is read. A notification is only a hint: it names tags, and the worker checks each stored spec built on
one by a manifest HEAD before rebuilding it (worker/basewatch.py). Events other than tag pushes are ignored, and
answered 202 all the same: a registry retries whatever it is not answered 2xx for."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import FastAPI, Path, Request
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from producer.client import BuildClient
from producer.edge import DOCKER_HUB_HOOK_PREFIX, REGISTRY_HOOK_PATH
from worker.errors import InvalidRequest
from worker.reference import DOCKER_HUB, ImageReference, parse_reference

HARBOR_PUSH = "PUSH_ARTIFACT"
PATH_TOKEN = "one of IMAGEBUILDER_WEBHOOK_TOKENS (the edge checks it before the route runs)"
logger = logging.getLogger(__name__)


class HookAnswer(BaseModel):
    """202: the tags whose stored specs will be checked, and how many events were not tag pushes."""

    checking: list[str]
    ignored: int


def pushed_in_registry_event(body: Any) -> tuple[list[ImageReference], int]:
    """The tags pushed according to a distribution envelope or a Harbor event; and how many events said
    something else (pulls, blob pushes, pushes by digest, other event types)."""
    if isinstance(body, dict) and isinstance(body.get("events"), list):
        return _found(_distribution_push(event) for event in body["events"])
    if isinstance(body, dict) and isinstance(body.get("type"), str):
        if body["type"] != HARBOR_PUSH:
            return [], 1
        return _found(_harbor_push(resource) for resource in _path(body, "event_data", "resources", default=[]))
    raise InvalidRequest("body: neither a registry's envelope of events (`events`) nor a Harbor event (`type`)")


def pushed_in_docker_hub_event(body: Any) -> tuple[list[ImageReference], int]:
    """The tag Docker Hub's push payload names (`repository.repo_name`, `push_data.tag`)."""
    repository, tag = _path(body, "repository", "repo_name"), _path(body, "push_data", "tag")
    if not isinstance(repository, str) or not isinstance(tag, str):
        raise InvalidRequest("body: not a Docker Hub push payload: `repository.repo_name` and `push_data.tag` "
                             "must be strings")
    return _found([_reference(f"{DOCKER_HUB}/{repository}:{tag}")])


def _distribution_push(event: Any) -> ImageReference | None:
    """A manifest pushed by tag: `request.host` (else the host of `target.url`), `target.repository`, `target.tag`."""
    target = _path(event, "target", default={})
    if _path(event, "action") != "push" or not isinstance(target, dict) or not target.get("tag"):
        return None
    host = _path(event, "request", "host") or urlsplit(str(target.get("url", ""))).netloc
    return _reference(f"{host}/{target.get('repository')}:{target['tag']}") if host else None


def _harbor_push(resource: Any) -> ImageReference | None:
    """`resource_url` is host/project/repository:tag, or …@digest for a push by digest (no tag: ignored)."""
    url = _path(resource, "resource_url")
    reference = _reference(url) if isinstance(url, str) else None
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


def _json_body(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        raise InvalidRequest("body: not JSON") from None


def mount_hooks(api: FastAPI, client: BuildClient, errors: dict[int | str, dict[str, Any]]) -> None:
    """The webhook routes, with their documented error answers; the edge (producer/edge.py) has checked their
    tokens before they run."""
    documented = {"status_code": 202, "response_model": HookAnswer, "responses": errors,
                  "openapi_extra": {"requestBody": {"content": {"application/json": {}}}}}

    @api.post(REGISTRY_HOOK_PATH, **documented)
    async def registry_hook(request: Request) -> HookAnswer:
        """A registry's notification, with `Authorization: Bearer <one of IMAGEBUILDER_WEBHOOK_TOKENS>`."""
        pushed, ignored = pushed_in_registry_event(_json_body(await request.body()))
        return await run_in_threadpool(_queue, client, pushed, ignored, "registry webhook")

    @api.post(DOCKER_HUB_HOOK_PREFIX + "{token}", **documented)
    async def docker_hub_hook(request: Request, token: Annotated[str, Path(description=PATH_TOKEN)]) -> HookAnswer:
        """Docker Hub's push webhook: it sends no headers, so one of IMAGEBUILDER_WEBHOOK_TOKENS is the last part
        of the path (and never logged)."""
        pushed, ignored = pushed_in_docker_hub_event(_json_body(await request.body()))
        return await run_in_threadpool(_queue, client, pushed, ignored, "Docker Hub webhook")


def _queue(client: BuildClient, pushed: list[ImageReference], ignored: int, source: str) -> HookAnswer:
    if pushed:
        client.bases_pushed(pushed)
        logger.info("%s: %s pushed; checking the specs built on it", source, ", ".join(map(str, pushed)))
    return HookAnswer(checking=[str(r) for r in pushed], ignored=ignored)
