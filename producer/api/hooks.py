"""The webhook routes: `POST /hooks/registry` (CNCF distribution's envelope, Harbor's event) and
`POST /hooks/dockerhub/{token}`; the edge has checked their tokens before they run, and put the registry hosts
the token speaks for in the request's scope."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Path, Request
from starlette.concurrency import run_in_threadpool

from core.reference import ImageReference
from producer.api.deps import Client
from producer.api.errors import documented
from producer.client import BuildClient
from producer.edge import DOCKER_HUB_HOOK_PREFIX, HOOK_HOSTS_SCOPE, REGISTRY_HOOK_PATH
from producer.hooks import (
    HookAnswer,
    bounded,
    in_scope,
    json_body,
    pushed_in_docker_hub_event,
    pushed_in_registry_event,
)

PATH_TOKEN = "one of IMAGEBUILDER_WEBHOOK_TOKENS (the edge checks it before the route runs)"
logger = logging.getLogger(__name__)

router = APIRouter(tags=["hooks"])
ANSWERS = {"status_code": 202, "response_model": HookAnswer, "responses": documented(400, 401, 413, 429, 503),
           "openapi_extra": {"requestBody": {"content": {"application/json": {}}}}}


@router.post(REGISTRY_HOOK_PATH, **ANSWERS)
async def registry_hook(client: Client, request: Request) -> HookAnswer:
    """A registry's notification, with `Authorization: Bearer <one of IMAGEBUILDER_WEBHOOK_TOKENS>`."""
    pushed, ignored = pushed_in_registry_event(json_body(await request.body()))
    return await run_in_threadpool(_queue, client, request.scope, pushed, ignored, "registry webhook")


@router.post(DOCKER_HUB_HOOK_PREFIX + "{token}", **ANSWERS)
async def docker_hub_hook(client: Client, request: Request,
                          token: Annotated[str, Path(description=PATH_TOKEN)]) -> HookAnswer:
    """Docker Hub's push webhook: it sends no headers, so one of IMAGEBUILDER_WEBHOOK_TOKENS is the last part of
    the path (and never logged)."""
    pushed, ignored = pushed_in_docker_hub_event(json_body(await request.body()))
    return await run_in_threadpool(_queue, client, request.scope, pushed, ignored, "Docker Hub webhook")


def _queue(client: BuildClient, scope: dict, pushed: list[ImageReference], ignored: int, source: str) -> HookAnswer:
    allowed = in_scope(bounded(pushed), scope.get(HOOK_HOSTS_SCOPE, frozenset()))
    if out_of_scope := len(pushed) - len(allowed):
        client.hooks.out_of_scope(out_of_scope)
        logger.warning("%s: ignored %d pushes naming registries its token does not speak for", source, out_of_scope)
    if allowed:
        client.hooks.bases_pushed(allowed)
        logger.info("%s: %s pushed; checking the specs built on it", source, ", ".join(map(str, allowed)))
    return HookAnswer(checking=[str(r) for r in allowed], ignored=ignored, out_of_scope=out_of_scope)
