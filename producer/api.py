"""The HTTP API (FastAPI): the same client and the same result model as the CLI, behind bearer tokens checked at
the edge (producer/edge.py) before any body is read."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Body, FastAPI, Header, Query, Request, Security
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from fastapi.security import HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from config.settings import Settings, SettingsError
from producer.client import BuildClient
from producer.console.csrf import CsrfChecked
from producer.console.routes import mount_console
from producer.console.sessions import Sessions
from producer.edge import CONSOLE_PREFIX, BearerTokens, Edge, HookTokensHidden
from producer.hooks import mount_hooks
from producer.outcomes import OUTCOMES, outcome_of
from producer.overview import MAX_PAGE_ITEMS, SpecDetail, SpecListing
from worker.errors import ConfigurationError, ImageBuilderError
from worker.metrics import metrics_registry
from worker.result import BuildResult
from worker.schedules import Policy, Schedule
from worker.spec import spec_named
from worker.specstore import HistoryEntry, StoredSpec
from worker.stores import store_errors

SSE = "text/event-stream"
_SSE_LINE_BREAK = re.compile(r"\r\n|\r|\n")
DEFAULT_PAGE_ITEMS = 100
MAX_OFFSET = 1_000_000
MAX_NAME_FILTER_CHARS = 128
SPEC_EXAMPLE = {"name": "test-build", "baseImage": "debian:bookworm", "packages": {"apt": ["jq"]}}
# Documents the bearer scheme in OpenAPI; the Edge is what enforces it, before FastAPI sees the request.
BEARER = Security(HTTPBearer(auto_error=False, description="one of IMAGEBUILDER_API_TOKENS"))


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


class Readiness(BaseModel):
    """`/readyz`: 200 when Redis answers, however many workers there are (they may be scaled to zero)."""

    redis: bool


def _documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these error statuses, described from the outcome table."""
    described = {401: ["missing or unknown bearer token"], 413: ["the request body is too large"]}
    for _, outcome in OUTCOMES:
        described.setdefault(outcome.status, []).append(outcome.what)
    return {status: {"model": ErrorBody, "description": "; ".join(described[status])} for status in statuses}


ERRORS = _documented(401, 422, 503)
BODY_ERRORS = _documented(401, 413, 422, 503)


def create_api(settings: Settings) -> FastAPI:
    """The app for `imagebuilder api`; refuses to start without IMAGEBUILDER_API_TOKENS."""
    if not settings.api_tokens:
        raise ConfigurationError("IMAGEBUILDER_API_TOKENS is not set: give at least one bearer token for the API")
    client = BuildClient(settings)
    tokens = [t.get_secret_value() for t in settings.api_tokens]
    sessions = Sessions(tokens, settings.ui_session_s)
    api = FastAPI(title="imagebuilder", version="0.1.0", description="Submit image builds and follow them.")
    api.add_middleware(CsrfChecked, secret=sessions.secret)
    api.add_middleware(Edge, tokens=BearerTokens(tokens), sessions=sessions,  # added last: runs first
                       max_body_bytes=settings.api_max_body_bytes, public_docs=settings.api_public_docs,
                       hook_tokens=BearerTokens(t.get_secret_value() for t in settings.webhook_tokens),
                       max_hook_body_bytes=settings.webhook_max_body_bytes)
    _hide_hook_tokens(logging.getLogger("uvicorn.access"))
    for kind in (*(kind for kind, _ in OUTCOMES), Exception):
        api.add_exception_handler(kind, _answer)
    api.add_exception_handler(RequestValidationError, _invalid_request)
    api.add_exception_handler(StarletteHTTPException, _http_error)
    _build_routes(api, client, LogStreams(settings.api_max_log_streams))
    _spec_routes(api, client)
    _service_routes(api, client)
    mount_hooks(api, client, _documented(400, 401, 413, 503))
    api.state.console = mount_console(api, client, settings, sessions)
    return api


def _hide_hook_tokens(access_log: logging.Logger) -> None:
    """Once per process, however many apps it makes (a filter on the logger outlives uvicorn's dictConfig)."""
    if not any(isinstance(f, HookTokensHidden) for f in access_log.filters):
        access_log.addFilter(HookTokensHidden())


def api_from_environment() -> FastAPI:
    """The app, from the environment's settings: what each of `imagebuilder api --workers N`'s processes runs."""
    return create_api(Settings())


async def _answer(request: Request, error: Exception) -> Response:
    """The status the outcome table gives the error. A bug's details stay out of the answer; Starlette logs its
    traceback, for the catch-all handler re-raises after answering."""
    detail = str(error) if isinstance(error, (ImageBuilderError, SettingsError)) else "internal error"
    return _error(request, outcome_of(error).status, detail)


async def _invalid_request(request: Request, error: RequestValidationError) -> Response:
    problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors())
    return _error(request, 422, f"invalid request: {problems}")


async def _http_error(request: Request, error: StarletteHTTPException) -> Response:
    """Routing's own answers (404 for an unknown path, 405): a console page on the console, else as FastAPI gives."""
    if request.url.path.startswith(CONSOLE_PREFIX):
        return _error(request, error.status_code, str(error.detail))
    return await http_exception_handler(request, error)


def _error(request: Request, status: int, detail: str) -> Response:
    """The API's JSON error body; a console page of its own for the console's routes."""
    if request.url.path.startswith(CONSOLE_PREFIX):
        return request.app.state.console.error(request, status, detail)
    return JSONResponse({"detail": detail}, status_code=status)


class LogStreams:
    """Live log streams hold a worker thread each for as long as the build runs: at most this many at once."""

    def __init__(self, most: int):
        self._most = most
        self._permits = threading.BoundedSemaphore(most)

    def follow(self, events: Iterator[str]) -> Iterator[str] | None:
        """The event stream with a permit held until it ends; None when every permit is taken."""
        if not self._permits.acquire(blocking=False):
            return None
        return self._releasing(events)

    def _releasing(self, events: Iterator[str]) -> Iterator[str]:
        try:
            yield from events
        finally:
            self._permits.release()

    def busy(self) -> JSONResponse:
        return JSONResponse({"detail": f"the API already serves {self._most} live log streams "
                                       "(IMAGEBUILDER_API_MAX_LOG_STREAMS); try again later"}, status_code=503)


def sse_event(data: str, event: str | None = None) -> str:
    """One server-sent event. Every line of `data` is a `data:` field of its own, so no text in it (a log line
    saying `event: end`, say) can ever become a field, or end the event early."""
    fields = [f"event: {event}"] if event else []
    fields += [f"data: {part}" for part in _SSE_LINE_BREAK.split(data)]
    return "\n".join(fields) + "\n\n"


def _events(client: BuildClient, build_id: str, lines: Iterator[str]) -> Iterator[str]:
    for line in lines:
        yield sse_event(line)
    yield sse_event(client.status(build_id).phase.value, event="end")


def _build_routes(api: FastAPI, client: BuildClient, streams: LogStreams) -> None:
    @api.post("/builds", status_code=202, response_model=BuildResult, dependencies=[BEARER],
              responses={**BODY_ERRORS, **_documented(403)})
    def submit(spec: Annotated[dict[str, Any], Body(examples=[SPEC_EXAMPLE])],
               force: Annotated[bool, Query()] = False) -> BuildResult:
        """Submit a spec in any accepted shape (plain, snake_case, PrimeHub's ImageSpec resource)."""
        return client.submit(spec, force=force)

    @api.get("/builds/{build_id}", response_model=BuildResult, dependencies=[BEARER],
             responses={**ERRORS, **_documented(404)})
    def status(build_id: str) -> BuildResult:
        return client.status(build_id)

    @api.get("/builds/{build_id}/logs", dependencies=[BEARER], response_class=PlainTextResponse,
             responses={**ERRORS, **_documented(404), 200: {"content": {"text/plain": {}, SSE: {}}}})
    def logs(build_id: str, follow: Annotated[bool, Query()] = False,
             accept: Annotated[str | None, Header()] = None) -> Response:
        """The build's log as text; live as server-sent events with `?follow=true` or `Accept: text/event-stream`,
        ending with an `end` event that carries the final phase. Each log line is one event."""
        live = follow or SSE in (accept or "")
        lines = client.logs(build_id, follow=live)
        if not live:
            return PlainTextResponse("".join(f"{line}\n" for line in lines))
        events = streams.follow(_events(client, build_id, lines))
        return StreamingResponse(events, media_type=SSE) if events is not None else streams.busy()

    @api.delete("/builds/{build_id}", status_code=202, response_model=BuildResult, dependencies=[BEARER],
                responses={**ERRORS, **_documented(404, 409)})
    def cancel(build_id: str) -> BuildResult:
        """Cancel: a queued build never starts, a running one stops; 409 for a build that already ended."""
        return client.cancel(build_id)


def _spec_routes(api: FastAPI, client: BuildClient) -> None:
    @api.put("/specs/{name}", response_model=AppliedSpec, dependencies=[BEARER],
             responses={**BODY_ERRORS, **_documented(403)})
    def apply(name: str, spec: Annotated[dict[str, Any], Body(examples=[SPEC_EXAMPLE])]) -> AppliedSpec:
        """Create or update a stored spec (any accepted shape; the name comes from the path if the body has
        none); a new spec, or an edit that changes its tag, is built at once."""
        stored, build = client.apply(spec_named(spec, name))
        return AppliedSpec(stored=stored, build=build)

    @api.get("/specs", response_model=list[SpecListing], dependencies=[BEARER], responses=ERRORS)
    def list_specs(response: Response, offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
                   limit: Annotated[int, Query(ge=1, le=MAX_PAGE_ITEMS)] = DEFAULT_PAGE_ITEMS,
                   name: Annotated[str, Query(max_length=MAX_NAME_FILTER_CHARS)] = "") -> list[SpecListing]:
        """A page of stored specs in name order (those whose name contains `name`), each with its newest build
        and its schedule; `X-Total-Count` says how many match in all."""
        page = client.spec_page(offset=offset, limit=limit, contains=name)
        response.headers["X-Total-Count"] = str(page.total)
        return page.items

    @api.get("/specs/{name}", response_model=SpecDetail, dependencies=[BEARER],
             responses={**ERRORS, **_documented(404)})
    def show(name: str) -> SpecDetail:
        """The stored spec, with `upstream` (the stored spec whose image it is built on) and `downstream` (those
        built on its images), which rebuild after it."""
        return client.spec_detail(name)

    @api.delete("/specs/{name}", status_code=204, dependencies=[BEARER], responses={**ERRORS, **_documented(404)})
    def delete(name: str) -> Response:
        client.delete_spec(name)
        return Response(status_code=204)

    @api.post("/specs/{name}/builds", status_code=202, response_model=BuildResult, dependencies=[BEARER],
              responses={**ERRORS, **_documented(403, 404)})
    def build(name: str, force: Annotated[bool, Query()] = False) -> BuildResult:
        return client.build(name, force=force)

    @api.put("/specs/{name}/schedule", response_model=Schedule, dependencies=[BEARER],
             responses={**BODY_ERRORS, **_documented(404)})
    def set_schedule(name: str, body: Annotated[ScheduleBody, Body()]) -> Schedule:
        """Schedule rebuilds: `cron` (+ `tz`) or `every_s`, with a `policy`; a cron that never fires is refused."""
        return client.set_schedule(name, **body.model_dump())

    @api.get("/specs/{name}/schedule", response_model=Schedule, dependencies=[BEARER],
             responses={**ERRORS, **_documented(404)})
    def get_schedule(name: str) -> Schedule:
        """The schedule, with its state: last check, last error, and why it disabled itself, if it did."""
        return client.schedule(name)

    @api.delete("/specs/{name}/schedule", status_code=204, dependencies=[BEARER],
                responses={**ERRORS, **_documented(404)})
    def remove_schedule(name: str) -> Response:
        client.remove_schedule(name)
        return Response(status_code=204)

    @api.get("/specs/{name}/history", response_model=list[HistoryEntry], dependencies=[BEARER],
             responses={**ERRORS, **_documented(404)})
    def history(name: str) -> list[HistoryEntry]:
        return client.history(name)

    @api.get("/schedules", response_model=list[Schedule], dependencies=[BEARER], responses=ERRORS)
    def list_schedules() -> list[Schedule]:
        """Every schedule, with its state (as `imagebuilder schedule list` shows it)."""
        return client.schedules()


def _service_routes(api: FastAPI, client: BuildClient) -> None:
    stores = client.stores
    registry = metrics_registry(client.redis)

    @api.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness, "description": "not ready"}})
    def readyz() -> JSONResponse:
        """No token needed: ready to accept builds when Redis answers, even with every worker scaled to zero."""
        ready = Readiness(redis=_redis_answers(client))
        return JSONResponse(ready.model_dump(), status_code=200 if ready.redis else 503)

    @api.get("/healthz", response_model=Health, responses={503: {"model": Health, "description": "unhealthy"}})
    def healthz() -> JSONResponse:
        """No token needed: Redis reachable and workers seen."""
        try:
            health = Health(redis=bool(client.redis.ping()), workers=stores.metrics.workers_seen())
        except Exception:  # any failure to answer means unhealthy; the probe itself must never fail
            health = Health(redis=False, workers=0)
        ok = health.redis and health.workers > 0
        return JSONResponse(health.model_dump(), status_code=200 if ok else 503)

    @api.get("/metrics", dependencies=[BEARER], response_class=PlainTextResponse,
             responses={**ERRORS, 200: {"content": {CONTENT_TYPE_LATEST: {}}}})
    def prometheus() -> Response:
        with store_errors():
            return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def _redis_answers(client: BuildClient) -> bool:
    try:
        return bool(client.redis.ping())
    except Exception:  # any failure to answer means not ready; the probe itself must never fail
        return False
