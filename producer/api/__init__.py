"""The HTTP API (FastAPI): one router per resource over the same client and result model as the CLI, behind the
edge (producer/edge.py), which checks tokens and sessions before any body is read; and the web console."""

from __future__ import annotations

import logging

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from config.settings import Settings
from core.errors import ConfigurationError
from core.outcomes import OUTCOMES
from core.reference import normalise_registry
from core.stores.connection import async_redis_client
from core.stores.sessions import SessionStore
from core.stores.throttle import Throttle
from producer.api import builds, hooks, schedules, service, specs
from producer.api.errors import answer_error, answer_http_error, answer_invalid_request
from producer.client import BuildClient
from producer.console.csrf import CsrfChecked
from producer.console.routes import mount_console
from producer.console.sessions import Sessions
from producer.edge import BearerTokens, Edge, HookTokens, HookTokensHidden
from producer.livelog import live_logs

MIN_TOKEN_CHARS = 16  # shorter API and webhook tokens stop the API at start
EDGE_REDIS_CONNECTIONS = 64  # the edge's session and throttle reads are short: more requests than this queue


def create_api(settings: Settings) -> FastAPI:
    """The app for `imagebuilder api`; refuses to start without IMAGEBUILDER_API_TOKENS, or with a token too short
    to withstand guessing."""
    tokens, hook_tokens = checked_tokens(settings)
    async_redis = async_redis_client(settings.redis_target, max_connections=EDGE_REDIS_CONNECTIONS)
    sessions = Sessions(tokens, settings.ui_session_s, SessionStore(async_redis, max_age_s=settings.ui_session_s))
    throttle = Throttle(async_redis, most=settings.auth_max_failures, window_s=settings.auth_failure_window_s)
    # No redirect that adds a slash: Starlette would build its location from the Host header (wrong behind a proxy)
    api = FastAPI(title="imagebuilder", version="0.1.0", description="Submit image builds and follow them.",
                  redirect_slashes=False)
    api.state.client, api.state.live_logs = BuildClient(settings), live_logs(settings)
    api.add_middleware(CsrfChecked, sessions=sessions)
    api.add_middleware(Edge, tokens=BearerTokens(tokens), sessions=sessions,  # added last: runs first
                       throttle=throttle, max_body_bytes=settings.api_max_body_bytes,
                       public_docs=settings.api_public_docs, hook_tokens=hook_tokens,
                       max_hook_body_bytes=settings.webhook_max_body_bytes)
    if settings.trusted_proxies:  # outermost: the edge and the routes see the client and scheme the proxy saw
        api.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.trusted_proxies)
    _answer_errors(api)
    for router in (builds.router, specs.router, schedules.router, service.router, hooks.router):
        api.include_router(router)
    api.state.console = mount_console(api, api.state.client, settings, sessions, throttle)
    _hide_hook_tokens(logging.getLogger("uvicorn.access"))
    return api


def _answer_errors(api: FastAPI) -> None:
    for kind in (*(kind for kind, _ in OUTCOMES), Exception):
        api.add_exception_handler(kind, answer_error)
    api.add_exception_handler(RequestValidationError, answer_invalid_request)
    api.add_exception_handler(StarletteHTTPException, answer_http_error)


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
