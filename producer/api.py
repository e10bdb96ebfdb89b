"""The HTTP API (FastAPI): the same client and the same result model as the CLI, behind bearer tokens checked at
the edge (producer/edge.py) before any body is read."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import Body, FastAPI, Header, Query, Request, Security
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool
from fastapi.security import HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
from pydantic import BaseModel

from config.celery_config import async_redis_client
from config.settings import Settings, SettingsError
from producer.client import BuildClient
from producer.console.csrf import CsrfChecked
from producer.console.routes import mount_console
from producer.console.sessions import Sessions
from producer.edge import CONSOLE_PREFIX, BearerTokens, Edge, HookTokens, HookTokensHidden
from producer.throttle import Throttle
from producer.hooks import mount_hooks
from producer.livelog import RETRY_AFTER_S, SSE, LiveLogs, live_logs
from producer.outcomes import OUTCOMES, outcome_of
from producer.overview import MAX_PAGE_ITEMS, SpecDetail, SpecListing
from worker.errors import ConfigurationError, ImageBuilderError
from worker.metrics import metrics_registry
from worker.reference import normalise_registry
from worker.result import BuildResult
from worker.schedules import Policy, Schedule
from worker.spec import spec_named
from worker.specstore import HistoryEntry, StoredSpec
from worker.stores import store_errors

MIN_TOKEN_CHARS = 16  # shorter API and webhook tokens stop the API at start
EDGE_REDIS_CONNECTIONS = 64  # the edge's session and throttle reads are short: more requests than this queue
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


def _described(status: int) -> str:
    """What an error status means, from the outcome table and the edge's own answers."""
    described = {401: ["missing or unknown bearer token"], 413: ["the request body is too large"],
                 429: ["too many failed credentials from this address lately: try again after Retry-After seconds"]}
    for _, outcome in OUTCOMES:
        described.setdefault(outcome.status, []).append(outcome.what)
    return "; ".join(described[status])


def _documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these error statuses, described from the outcome table."""
    return {status: {"model": ErrorBody, "description": _described(status)} for status in statuses}


def _documented_as_json(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The same for a route whose own answer is not JSON: FastAPI would document a `model` in the route's media
    type (text/plain), but its errors are JSON all the same."""
    content = {"application/json": {"schema": ErrorBody.model_json_schema()}}
    return {status: {"description": _described(status), "content": content} for status in statuses}


def _log_responses() -> dict[int | str, dict[str, Any]]:
    """The log route's answers: text or server-sent events, else a JSON error; 503 also past the live log bound."""
    responses = {**_documented_as_json(401, 404, 422, 429, 503), 200: {"content": {"text/plain": {}, SSE: {}}}}
    responses[503]["description"] += "; this API process serves IMAGEBUILDER_API_MAX_LOG_STREAMS live logs already"
    responses[503]["headers"] = {"Retry-After": {"description": f"when full: {RETRY_AFTER_S} (seconds)",
                                                 "schema": {"type": "integer"}}}
    return responses


ERRORS = _documented(401, 422, 429, 503)
# FastAPI answers 400 itself, in the API's JSON shape, to a JSON body it cannot decode or that nests too deeply.
UNREADABLE_BODY = "the body is not UTF-8, or its JSON is nested too deeply"
FASTAPI_UNREADABLE_BODY = "There was an error parsing the body"  # what FastAPI itself says then
BODY_ERRORS = {**_documented(401, 413, 422, 429, 503), 400: {"model": ErrorBody, "description": UNREADABLE_BODY}}


def create_api(settings: Settings) -> FastAPI:
    """The app for `imagebuilder api`; refuses to start without IMAGEBUILDER_API_TOKENS, or with a token too short
    to withstand guessing."""
    tokens, hook_tokens = checked_tokens(settings)
    client = BuildClient(settings)
    async_redis = async_redis_client(settings.redis_dsn, max_connections=EDGE_REDIS_CONNECTIONS)
    sessions = Sessions(tokens, settings.ui_session_s, async_redis)
    throttle = Throttle(async_redis, most=settings.auth_max_failures, window_s=settings.auth_failure_window_s)
    # No redirect that adds a slash: Starlette would build its location from the Host header (wrong behind a proxy)
    api = FastAPI(title="imagebuilder", version="0.1.0", description="Submit image builds and follow them.",
                  redirect_slashes=False)
    api.add_middleware(CsrfChecked, sessions=sessions)
    api.add_middleware(Edge, tokens=BearerTokens(tokens), sessions=sessions,  # added last: runs first
                       throttle=throttle, max_body_bytes=settings.api_max_body_bytes,
                       public_docs=settings.api_public_docs, hook_tokens=hook_tokens,
                       max_hook_body_bytes=settings.webhook_max_body_bytes)
    if settings.trusted_proxies:  # outermost: the edge and the routes see the client and scheme the proxy saw
        api.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.trusted_proxies)
    _hide_hook_tokens(logging.getLogger("uvicorn.access"))
    for kind in (*(kind for kind, _ in OUTCOMES), Exception):
        api.add_exception_handler(kind, _answer)
    api.add_exception_handler(RequestValidationError, _invalid_request)
    api.add_exception_handler(StarletteHTTPException, _http_error)
    _build_routes(api, client, live_logs(settings))
    _spec_routes(api, client)
    _service_routes(api, client)
    mount_hooks(api, client, _documented(400, 401, 413, 429, 503))
    api.state.console = mount_console(api, client, settings, sessions, throttle)
    return api


def checked_tokens(settings: Settings) -> tuple[list[str], HookTokens]:
    """The API's tokens and the webhooks'; ConfigurationError, naming the setting but never a token, if there is
    no API token or one is shorter than MIN_TOKEN_CHARS."""
    if not settings.api_tokens:
        raise ConfigurationError("IMAGEBUILDER_API_TOKENS is not set: give at least one bearer token for the API")
    tokens = [t.get_secret_value() for t in settings.api_tokens]
    hooks = [(t.token.get_secret_value(), frozenset(normalise_registry(h) for h in t.hosts))
             for t in settings.webhook_tokens]
    _refuse_short("IMAGEBUILDER_API_TOKENS", tokens)
    _refuse_short("IMAGEBUILDER_WEBHOOK_TOKENS", [token for token, _ in hooks])
    return tokens, HookTokens(hooks)


def _refuse_short(setting: str, tokens: list[str]) -> None:
    if short := sum(len(token) < MIN_TOKEN_CHARS for token in tokens):
        raise ConfigurationError(f"{setting}: {short} of its {len(tokens)} tokens are shorter than {MIN_TOKEN_CHARS} "
                                 "characters, too easy to guess; use e.g. `openssl rand -hex 16`")


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
    """Routing's own answers (404 for an unknown path, 405), and FastAPI's 400 for a JSON body it could not decode
    (said plainly): a console page on the console, else as FastAPI gives."""
    if error.status_code == 400 and error.detail == FASTAPI_UNREADABLE_BODY:
        error = StarletteHTTPException(400, f"body: {UNREADABLE_BODY}")
    if request.url.path.startswith(CONSOLE_PREFIX):
        return _error(request, error.status_code, str(error.detail))
    return await http_exception_handler(request, error)


def _error(request: Request, status: int, detail: str) -> Response:
    """The API's JSON error body; a console page of its own for the console's routes."""
    if request.url.path.startswith(CONSOLE_PREFIX):
        return request.app.state.console.error(request, status, detail)
    return JSONResponse({"detail": detail}, status_code=status)


def _log_text(client: BuildClient, build_id: str) -> str:
    return "".join(f"{line}\n" for line in client.logs(build_id))


def _build_routes(api: FastAPI, client: BuildClient, live: LiveLogs) -> None:
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
             responses=_log_responses())
    async def logs(build_id: str, follow: Annotated[bool, Query()] = False,
                   accept: Annotated[str | None, Header()] = None) -> Response:
        """The build's log as text; live as server-sent events with `?follow=true` or `Accept: text/event-stream`:
        each log line is one event, and the `end` event carries the final phase (an `unavailable` event instead
        says why the stream stopped short); a `: keep-alive` comment keeps a quiet stream open."""
        if follow or SSE in (accept or ""):
            return await live.follow(build_id)
        return PlainTextResponse(await run_in_threadpool(_log_text, client, build_id))

    @api.delete("/builds/{build_id}", status_code=202, response_model=BuildResult, dependencies=[BEARER],
                responses={**ERRORS, **_documented(404, 409)})
    def cancel(build_id: str) -> BuildResult:
        """Cancel: a queued build never starts, a running one stops; 409 for a build that already ended."""
        return client.cancel(build_id)


def _spec_routes(api: FastAPI, client: BuildClient) -> None:
    @api.put("/specs/{name}", response_model=AppliedSpec, dependencies=[BEARER],
             responses={**BODY_ERRORS, **_documented(403, 409)})
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
             responses={**_documented_as_json(401, 429, 503), 200: {"content": {CONTENT_TYPE_LATEST: {}}}})
    def prometheus() -> Response:
        with store_errors():
            return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def _redis_answers(client: BuildClient) -> bool:
    try:
        return bool(client.redis.ping())
    except Exception:  # any failure to answer means not ready; the probe itself must never fail
        return False
