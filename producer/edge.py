"""The API's edge, in front of FastAPI: a request is authenticated before a byte of its body is read, and its
body is bounded. FastAPI reads and parses a body before any route dependency runs, so neither can be left to it.

The API takes a bearer token; the console's pages (and the live log they follow) take the console's session
cookie instead, and send whoever has none to sign in. Webhooks take a webhook token of their own: as a bearer
token, or, for Docker Hub (which sends no headers), as the last part of the path; their bodies have a smaller bound.

Plain ASGI rather than Starlette's BaseHTTPMiddleware: that one wraps every response, server-sent events too."""

from __future__ import annotations

import hmac
import json
import logging
import re
from urllib.parse import quote
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from starlette.requests import cookie_parser

from producer.console.sessions import SESSION_COOKIE, Sessions

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

HEALTH_PATHS = frozenset({"/healthz", "/readyz"})
DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
CONSOLE_PUBLIC_PATHS = frozenset({"/", "/ui/login"})
CONSOLE_PREFIX = "/ui/"
CONSOLE_STATIC_PREFIX = "/ui/static/"
SIGN_IN_PATH = "/ui/login"
_LIVE_LOG_PATH = re.compile(r"/builds/[^/]+/logs")
HOOKS_PREFIX = "/hooks/"
REGISTRY_HOOK_PATH = "/hooks/registry"
DOCKER_HUB_HOOK_PREFIX = "/hooks/dockerhub/"
_DOCKER_HUB_HOOK_PATH = re.compile(r"/hooks/dockerhub/(?P<token>[^/]+)")


class BearerTokens:
    """The API tokens; every one is compared in constant time, whichever matches."""

    def __init__(self, tokens: Iterable[str]):
        self._tokens = [token.encode() for token in tokens]

    def match(self, authorization: bytes) -> bool:
        """An `Authorization: Bearer <token>` header's value."""
        scheme, _, given = authorization.partition(b" ")
        return self.match_token(given.strip()) and scheme.lower() == b"bearer"

    def match_token(self, given: bytes) -> bool:
        matched = False
        for token in self._tokens:
            matched |= hmac.compare_digest(given, token)
        return matched


class Edge:
    """Answers 401 to a request without a valid token before reading its body, then 413 to a body past
    `max_body_bytes` (declared or, chunked, as it arrives); hands the app the body it read."""

    def __init__(self, app: ASGIApp, *, tokens: BearerTokens, sessions: Sessions, max_body_bytes: int,
                 public_docs: bool, hook_tokens: BearerTokens = BearerTokens(()), max_hook_body_bytes: int = 0):
        self._app = app
        self._tokens = tokens
        self._sessions = sessions
        self._max_body_bytes = max_body_bytes
        self._hook_tokens = hook_tokens
        self._max_hook_body_bytes = max_hook_body_bytes
        self._public = HEALTH_PATHS | CONSOLE_PUBLIC_PATHS | (DOCS_PATHS if public_docs else frozenset())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        path = scope["path"]
        if path.startswith(CONSOLE_PREFIX) and not self._is_public(path) and not self._signed_in(scope):
            await redirect(send, f"{SIGN_IN_PATH}?next={quote(path)}")
            return
        if path.startswith(HOOKS_PREFIX):
            await self._hook(scope, receive, send)
            return
        if not path.startswith(CONSOLE_PREFIX) and not self._is_public(path) and not self._api_caller(scope):
            await answer(send, 401, "a valid bearer token is required", {"www-authenticate": "Bearer"})
            return
        await self._pass_bounded(scope, receive, send, self._max_body_bytes, "IMAGEBUILDER_API_MAX_BODY_BYTES")

    async def _hook(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._hook_caller(scope):
            await answer(send, 401, "a valid webhook token is required (one of IMAGEBUILDER_WEBHOOK_TOKENS)",
                         {"www-authenticate": "Bearer"})
            return
        await self._pass_bounded(scope, receive, send, self._max_hook_body_bytes,
                                 "IMAGEBUILDER_WEBHOOK_MAX_BODY_BYTES")

    async def _pass_bounded(self, scope: Scope, receive: Receive, send: Send, most: int, setting: str) -> None:
        body = await self._bounded_body(scope, receive, most)
        if body is None:
            await answer(send, 413, f"the request body is larger than {most} bytes ({setting})")
            return
        await self._app(scope, _replaying(body, receive), send)

    def _is_public(self, path: str) -> bool:
        return path in self._public or path.startswith(CONSOLE_STATIC_PREFIX)

    def _signed_in(self, scope: Scope) -> bool:
        cookie = cookie_parser(_header(scope, b"cookie").decode("latin-1")).get(SESSION_COOKIE, "")
        return bool(cookie) and self._sessions.valid(cookie)

    def _hook_caller(self, scope: Scope) -> bool:
        """A registry's notification with a webhook token as its bearer token, or Docker Hub's with one in its path."""
        path = scope["path"]
        if path == REGISTRY_HOOK_PATH:
            return self._hook_tokens.match(_header(scope, b"authorization"))
        in_path = _DOCKER_HUB_HOOK_PATH.fullmatch(path)
        return in_path is not None and self._hook_tokens.match_token(in_path["token"].encode("utf-8", "replace"))

    def _api_caller(self, scope: Scope) -> bool:
        """A bearer token; or, for a console page following a build's log live, a console session."""
        if self._tokens.match(_header(scope, b"authorization")):
            return True
        return scope["method"] == "GET" and bool(_LIVE_LOG_PATH.fullmatch(scope["path"])) and self._signed_in(scope)

    async def _bounded_body(self, scope: Scope, receive: Receive, most: int) -> bytes | None:
        """The whole body, or None as soon as it is known to be longer than `most` (before reading it, if declared)."""
        declared = _header(scope, b"content-length")
        if declared.isdigit() and int(declared) > most:
            return None
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: the app will hear it too
                return b"".join(chunks)
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > most:
                return None
            if not message.get("more_body", False):
                return b"".join(chunks)


class HookTokensHidden(logging.Filter):
    """Keeps Docker Hub's webhook token, which is in its path, out of the access log (uvicorn's record args are
    client, method, path, HTTP version, status)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], hide_hook_token(args[2]), *args[3:])
        return True


def hide_hook_token(path: str) -> str:
    if not path.startswith(DOCKER_HUB_HOOK_PREFIX):
        return path
    return DOCKER_HUB_HOOK_PREFIX + "[token hidden]"


def _header(scope: Scope, name: bytes) -> bytes:
    return next((value for key, value in scope["headers"] if key.lower() == name), b"")


def _replaying(body: bytes, receive: Receive) -> Receive:
    """A `receive` that gives the app the body already read, then whatever the connection says next."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay


async def redirect(send: Send, location: str) -> None:
    """303 See Other: the browser GETs `location` whatever the request's method was."""
    headers = [(b"location", location.encode("latin-1")), (b"content-length", b"0")]
    await send({"type": "http.response.start", "status": 303, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


async def answer(send: Send, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
    """A JSON error answer in the API's one shape: {"detail": ...}."""
    body = json.dumps({"detail": detail}).encode()
    raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   *((k.encode(), v.encode()) for k, v in (headers or {}).items())]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})
