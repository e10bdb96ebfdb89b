"""The HTTP API (FastAPI): the same client and the same result model as the CLI, behind bearer tokens."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from typing import Annotated, Any

import redis.exceptions
from fastapi import Body, Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from config.settings import Settings
from producer.client import BuildClient
from worker.errors import AlreadyFinished, ConfigurationError, FeatureDisabled, InvalidSpec, UnknownBuild, UnknownSpec
from worker.metrics import Metrics, metrics_registry
from worker.result import BuildResult
from worker.schedules import Policy, Schedule
from worker.specstore import HistoryEntry, StoredSpec

SSE = "text/event-stream"


class ErrorBody(BaseModel):
    """Every error answer: `detail` says what is wrong (for 422, the field and the rule)."""

    detail: str


class AppliedSpec(BaseModel):
    """`PUT /specs/{name}`: the stored spec, and the build it started if it is new or its tag changed."""

    stored: StoredSpec
    build: BuildResult | None = None


class ScheduleBody(BaseModel):
    """`PUT /specs/{name}/schedule`: a cron expression read in `tz`, or an interval in seconds."""

    cron: str | None = None
    every_s: int | None = None
    tz: str = "UTC"
    policy: Policy = Policy.ON_BASE_CHANGE


class Health(BaseModel):
    """`/healthz`: 200 when Redis answers and at least one worker was seen in the last half minute."""

    redis: bool
    workers: int


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in {401: "missing or unknown bearer token", 422: "invalid input: the field and the rule",
                       503: "Redis or the build service is unavailable"}.items()
}
NOT_FOUND = {404: {"model": ErrorBody, "description": "no build with this id"}}
SPEC_EXAMPLE = {"name": "test-build", "baseImage": "debian:bookworm", "packages": {"apt": ["jq"]}}

# Domain errors and the status each one answers with.
STATUS_OF = [(UnknownBuild, 404), (UnknownSpec, 404), (AlreadyFinished, 409), (FeatureDisabled, 403),
             (InvalidSpec, 422), (ConfigurationError, 503), (redis.exceptions.ConnectionError, 503)]


def create_api(settings: Settings) -> FastAPI:
    """The app for `imagebuilder api`; refuses to start without IMAGEBUILDER_API_TOKENS."""
    if not settings.api_tokens:
        raise ConfigurationError("IMAGEBUILDER_API_TOKENS is not set: give at least one bearer token for the API")
    client = BuildClient(settings)
    api = FastAPI(title="imagebuilder", version="0.1.0", description="Submit image builds and follow them.")
    authorised = Depends(_token_check([t.get_secret_value().encode() for t in settings.api_tokens]))
    for error, status in STATUS_OF:
        api.add_exception_handler(error, _answer_with(status))
    api.add_exception_handler(RequestValidationError, _invalid_request)
    api.add_exception_handler(_Unauthorised, _unauthorised)
    _build_routes(api, client, authorised)
    _spec_routes(api, client, authorised)
    _service_routes(api, client, authorised)
    return api


def _token_check(tokens: list[bytes]):
    bearer = HTTPBearer(auto_error=False)

    def check(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:  # noqa: B008
        given = credentials.credentials.encode() if credentials else b""
        matched = False
        for token in tokens:  # every token is compared, in constant time, whichever matches
            matched |= hmac.compare_digest(given, token)
        if not matched:
            raise _Unauthorised()

    return check


class _Unauthorised(Exception):
    """No bearer token, or one that matches none of IMAGEBUILDER_API_TOKENS."""


async def _unauthorised(request: Request, error: _Unauthorised) -> JSONResponse:
    return JSONResponse({"detail": "a valid bearer token is required"}, status_code=401,
                        headers={"WWW-Authenticate": "Bearer"})


def _answer_with(status: int):
    async def handler(request: Request, error: Exception) -> JSONResponse:
        detail = "Redis cannot be reached" if isinstance(error, redis.exceptions.ConnectionError) else str(error)
        return JSONResponse({"detail": detail}, status_code=status)

    return handler


async def _invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
    problems = "; ".join(
        f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()
    )
    return JSONResponse({"detail": f"invalid request: {problems}"}, status_code=422)


def _build_routes(api: FastAPI, client: BuildClient, authorised) -> None:
    @api.post("/builds", status_code=202, response_model=BuildResult, dependencies=[authorised],
              responses={**ERRORS, 403: {"model": ErrorBody, "description": "building is disabled"}})
    def submit(spec: Annotated[dict[str, Any], Body(examples=[SPEC_EXAMPLE])],
               force: Annotated[bool, Query()] = False) -> BuildResult:
        """Submit a spec in any accepted shape (plain, snake_case, PrimeHub's ImageSpec resource)."""
        return client.submit(spec, force=force)

    @api.get("/builds/{build_id}", response_model=BuildResult, dependencies=[authorised],
             responses={**ERRORS, **NOT_FOUND})
    def status(build_id: str) -> BuildResult:
        return client.status(build_id)

    @api.get("/builds/{build_id}/logs", dependencies=[authorised], response_class=PlainTextResponse,
             responses={**ERRORS, **NOT_FOUND, 200: {"content": {"text/plain": {}, SSE: {}}}})
    def logs(build_id: str, follow: Annotated[bool, Query()] = False,
             accept: Annotated[str | None, Header()] = None) -> Response:
        """The build's log as text; live as server-sent events with `?follow=true` or `Accept: text/event-stream`,
        ending with an `end` event that carries the final phase."""
        lines = client.logs(build_id, follow=follow or SSE in (accept or ""))
        if follow or SSE in (accept or ""):
            return StreamingResponse(_events(client, build_id, lines), media_type=SSE)
        return PlainTextResponse("".join(f"{line}\n" for line in lines))

    @api.delete("/builds/{build_id}", status_code=202, response_model=BuildResult, dependencies=[authorised],
                responses={**ERRORS, **NOT_FOUND, 409: {"model": ErrorBody, "description": "already finished"}})
    def cancel(build_id: str) -> BuildResult:
        """Cancel: a queued build never starts, a running one stops; 409 for a build that already ended."""
        return client.cancel(build_id)


def _spec_routes(api: FastAPI, client: BuildClient, authorised) -> None:
    no_spec = {404: {"model": ErrorBody, "description": "no stored spec with this name"}}

    @api.put("/specs/{name}", response_model=AppliedSpec, dependencies=[authorised],
             responses={**ERRORS, 403: {"model": ErrorBody, "description": "building is disabled"}})
    def apply(name: str, spec: Annotated[dict[str, Any], Body(examples=[SPEC_EXAMPLE])]) -> AppliedSpec:
        """Create or update a stored spec (any accepted shape; the name comes from the path if the body has
        none); a new spec, or an edit that changes its tag, is built at once."""
        named = _with_name(spec, name)
        stored, build = client.apply(named)
        return AppliedSpec(stored=stored, build=build)

    @api.get("/specs", response_model=list[StoredSpec], dependencies=[authorised], responses=ERRORS)
    def list_specs() -> list[StoredSpec]:
        return client.specs()

    @api.get("/specs/{name}", response_model=StoredSpec, dependencies=[authorised],
             responses={**ERRORS, **no_spec})
    def show(name: str) -> StoredSpec:
        return client.spec(name)

    @api.delete("/specs/{name}", status_code=204, dependencies=[authorised], responses={**ERRORS, **no_spec})
    def delete(name: str) -> Response:
        client.delete_spec(name)
        return Response(status_code=204)

    @api.post("/specs/{name}/builds", status_code=202, response_model=BuildResult, dependencies=[authorised],
              responses={**ERRORS, **no_spec, 403: {"model": ErrorBody, "description": "building is disabled"}})
    def build(name: str, force: Annotated[bool, Query()] = False) -> BuildResult:
        return client.build(name, force=force)

    @api.put("/specs/{name}/schedule", response_model=Schedule, dependencies=[authorised],
             responses={**ERRORS, **no_spec})
    def set_schedule(name: str, body: Annotated[ScheduleBody, Body()]) -> Schedule:
        """Schedule rebuilds: `cron` (+ `tz`) or `every_s`, with a `policy`."""
        return client.set_schedule(name, **body.model_dump())

    @api.delete("/specs/{name}/schedule", status_code=204, dependencies=[authorised],
                responses={**ERRORS, **no_spec})
    def remove_schedule(name: str) -> Response:
        client.remove_schedule(name)
        return Response(status_code=204)

    @api.get("/specs/{name}/history", response_model=list[HistoryEntry], dependencies=[authorised],
             responses={**ERRORS, **no_spec})
    def history(name: str) -> list[HistoryEntry]:
        return client.history(name)


def _with_name(spec: dict[str, Any], name: str) -> dict[str, Any]:
    """The path names the spec: fill it in where the body has none; refuse a body naming another one."""
    if spec.get("kind") == "ImageSpec":
        metadata = {**(spec.get("metadata") or {})}
        metadata.setdefault("name", name)
        spec = {**spec, "metadata": metadata}
        given = metadata["name"]
    else:
        spec = {**spec, "name": spec.get("name", name)}
        given = spec["name"]
    if given != name:
        raise InvalidSpec(f"name: the body names {given!r} but the path names {name!r}")
    return spec


def _events(client: BuildClient, build_id: str, lines: Iterator[str]) -> Iterator[str]:
    for line in lines:
        yield f"data: {line}\n\n"
    yield f"event: end\ndata: {client.status(build_id).phase.value}\n\n"


def _service_routes(api: FastAPI, client: BuildClient, authorised) -> None:
    metrics = Metrics(client.redis)
    registry = metrics_registry(client.redis)

    @api.get("/healthz", response_model=Health, responses={503: {"model": Health, "description": "unhealthy"}})
    def healthz() -> JSONResponse:
        """No token needed: Redis reachable and workers seen."""
        try:
            health = Health(redis=bool(client.redis.ping()), workers=metrics.workers_seen())
        except redis.exceptions.RedisError:
            health = Health(redis=False, workers=0)
        ok = health.redis and health.workers > 0
        return JSONResponse(health.model_dump(), status_code=200 if ok else 503)

    @api.get("/metrics", dependencies=[authorised], response_class=PlainTextResponse,
             responses={**ERRORS, 200: {"content": {CONTENT_TYPE_LATEST: {}}}})
    def prometheus() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
