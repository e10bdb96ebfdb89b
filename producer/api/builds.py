"""`/builds`: submit a spec, read a build, its log (live as server-sent events) and its image's SBOM, cancel it."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Query
from fastapi.responses import PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool

from core.result import BuildResult
from core.sbom import SBOM_MEDIA_TYPE
from producer.api.deps import BEARER, SPEC_EXAMPLE, Client, Live
from producer.api.errors import BODY_ERRORS, ERRORS, documented, documented_as_json
from producer.client import BuildClient
from producer.livelog import RETRY_AFTER_S, SSE

router = APIRouter(prefix="/builds", tags=["builds"], dependencies=[BEARER])
MAX_PLATFORM_CHARS = 32
PLATFORM_PATTERN = r"^[a-z0-9]+/[a-z0-9]+(/[a-z0-9]+)?$"  # os/arch[/variant]


def _log_responses() -> dict[int | str, dict[str, Any]]:
    """The log route's answers: text or server-sent events, else a JSON error; 503 also past the live log bound."""
    responses = {**documented_as_json(401, 404, 422, 429, 503), 200: {"content": {"text/plain": {}, SSE: {}}}}
    responses[503]["description"] += "; this API process serves IMAGEBUILDER_API_MAX_LOG_STREAMS live logs already"
    responses[503]["headers"] = {"Retry-After": {"description": f"when full: {RETRY_AFTER_S} (seconds)",
                                                 "schema": {"type": "integer"}}}
    return responses


@router.post("", status_code=202, response_model=BuildResult, responses={**BODY_ERRORS, **documented(403)})
def submit(client: Client, spec: Annotated[dict[str, Any], Body(examples=[SPEC_EXAMPLE])],
           force: Annotated[bool, Query()] = False) -> BuildResult:
    """Submit a spec in any accepted shape (plain, snake_case, PrimeHub's ImageSpec resource)."""
    return client.submit(spec, force=force)


@router.get("/{build_id}", response_model=BuildResult, responses={**ERRORS, **documented(404)})
def status(client: Client, build_id: str) -> BuildResult:
    return client.status(build_id)


@router.get("/{build_id}/logs", response_class=PlainTextResponse, responses=_log_responses())
async def logs(client: Client, live: Live, build_id: str, follow: Annotated[bool, Query()] = False,
               accept: Annotated[str | None, Header()] = None) -> Response:
    """The build's log as text; live as server-sent events with `?follow=true` or `Accept: text/event-stream`:
    each log line is one event, and the `end` event carries the final phase (an `unavailable` event instead
    says why the stream stopped short); a `: keep-alive` comment keeps a quiet stream open."""
    if follow or SSE in (accept or ""):
        return await live.follow(build_id)
    return PlainTextResponse(await run_in_threadpool(_log_text, client, build_id))


@router.get("/{build_id}/sbom", response_class=Response,
            responses={200: {"content": {SBOM_MEDIA_TYPE: {}}}, **documented_as_json(401, 404, 422, 429, 502, 503)})
def sbom(client: Client, build_id: str,
         platform: Annotated[str | None, Query(max_length=MAX_PLATFORM_CHARS, pattern=PLATFORM_PATTERN)] = None,
         ) -> Response:
    """The CycloneDX SBOM attached to the build's image, read from its registry (a skipped build's is the existing
    image's); `platform` picks the image of one platform of a multi-platform build (else the first by name)."""
    return Response(client.sboms.of_build(build_id, platform), media_type=SBOM_MEDIA_TYPE)


@router.delete("/{build_id}", status_code=202, response_model=BuildResult,
               responses={**ERRORS, **documented(404, 409)})
def cancel(client: Client, build_id: str) -> BuildResult:
    """Cancel: a queued build never starts, a running one stops; 409 for a build that already ended."""
    return client.cancel(build_id)


def _log_text(client: BuildClient, build_id: str) -> str:
    return "".join(f"{line}\n" for line in client.logs(build_id))
