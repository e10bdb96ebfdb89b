"""The API's edge, in front of FastAPI: a request is authenticated before a byte of its body is read, and its
body is bounded. FastAPI reads and parses a body before any route dependency runs, so neither can be left to it.

The API takes a bearer token; the console's pages (and the live log they follow) take the console's session
cookie instead, and send whoever has none to sign in. Webhooks take a webhook token of their own: as a bearer
token, or, for Docker Hub (which sends no headers), as the last part of the path; their bodies have a smaller bound.
A client whose credentials failed too often lately is answered 429 before any of them is looked at.

Plain ASGI rather than Starlette's BaseHTTPMiddleware: that one wraps every response, server-sent events too."""

from __future__ import annotations

import hmac
import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import quote

from starlette.requests import cookie_parser

from core.errors import StoreUnavailable
from core.stores.throttle import Door, Throttle
from producer.console.sessions import SESSION_COOKIE, Sessions

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Refusal = Callable[[Send], Awaitable[None]]

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
# Everything after a `dockerhub` segment, however the path is spelt (`//hooks/`, `/Hooks/`, `/hooks//dockerhub/`)
_DOCKER_HUB_TOKEN_IN_PATH = re.compile(r"(?i)(dockerhub/+).+")
SESSION_SCOPE = "imagebuilder.session"  # the request's valid console session id, for the CSRF check
HOOK_HOSTS_SCOPE = "imagebuilder.hook_hosts"  # the registry hosts the request's webhook token speaks for
UNKNOWN_CLIENT = "unknown"


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


class HookTokens:
    """The webhook tokens, each with the registry hosts it may speak for (empty: any); every one is compared in
    constant time, whichever matches."""

    def __init__(self, entries: Iterable[tuple[str, frozenset[str]]]):
        self._entries = [(token.encode(), hosts) for token, hosts in entries]

    def hosts_of_header(self, authorization: bytes) -> frozenset[str] | None:
        """The hosts of the token an `Authorization: Bearer <token>` header carries; None if it is none of them."""
        scheme, _, given = authorization.partition(b" ")
        hosts = self.hosts_of(given.strip())
        return hosts if scheme.lower() == b"bearer" else None

    def hosts_of(self, given: bytes) -> frozenset[str] | None:
        found = None
        for token, hosts in self._entries:
            if hmac.compare_digest(given, token):
                found = hosts
        return found


class Edge:
    """Answers 401 to a request without a valid token before reading its body (429 to a client that failed too
    often), then 413 to a body past its bound (declared or, chunked, as it arrives); hands the app the body it
    read."""

    def __init__(self, app: ASGIApp, *, tokens: BearerTokens, sessions: Sessions, throttle: Throttle,
                 max_body_bytes: int, public_docs: bool, hook_tokens: HookTokens = HookTokens(()),
                 max_hook_body_bytes: int = 0):
        self._app = app
        self._tokens = tokens
        self._sessions = sessions
        self._throttle = throttle
        self._hook_tokens = hook_tokens
        self._bounds = {False: (max_body_bytes, "IMAGEBUILDER_API_MAX_BODY_BYTES"),
                        True: (max_hook_body_bytes, "IMAGEBUILDER_WEBHOOK_MAX_BODY_BYTES")}
        self._public = HEALTH_PATHS | CONSOLE_PUBLIC_PATHS | (DOCS_PATHS if public_docs else frozenset())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        try:
            refusal = await self._refusal(scope)
        except StoreUnavailable as e:  # Redis away: the edge cannot tell who is asking
            refusal = _answering(503, e.message)
        if refusal is not None:
            await refusal(send)
            return
        most, setting = self._bounds[scope["path"].startswith(HOOKS_PREFIX)]
        body = await self._bounded_body(scope, receive, most)
        if body is None:
            await answer(send, 413, f"the request body is larger than {most} bytes ({setting})")
            return
        await self._app(scope, _replaying(body, receive), send)

    async def _refusal(self, scope: Scope) -> Refusal | None:
        """How the request is refused, or None to let it through (its scope marked with what it was let in by)."""
        path = scope["path"]
        if path.startswith(CONSOLE_PREFIX):
            return await self._console_refusal(scope)
        if path.startswith(HOOKS_PREFIX):
            return await self._hook_refusal(scope)
        if self._is_public(path) or await self._live_log_follower(scope):
            return None
        return await self._api_refusal(scope)

    async def _console_refusal(self, scope: Scope) -> Refusal | None:
        path = scope["path"]
        if self._is_public(path) or await self._signed_in(scope):
            return None
        return lambda send: redirect(send, f"{SIGN_IN_PATH}?next={quote(path)}")

    async def _api_refusal(self, scope: Scope) -> Refusal | None:
        """A bearer token; looked at only for a client that has not failed too often lately, so that a guess made
        past the bound learns nothing, right or wrong."""
        authorization = _header(scope, b"authorization")
        if (wait_s := await self._throttle.wait_s(Door.API, _client(scope))) is not None:
            return _throttled(wait_s)
        if self._tokens.match(authorization):
            return None
        return await self._unauthorized(scope, Door.API, bool(authorization), "a valid bearer token is required")

    async def _hook_refusal(self, scope: Scope) -> Refusal | None:
        """A registry's notification with a webhook token as its bearer token, or Docker Hub's with one in its
        path; the token's registry hosts go with the request. A valid token always passes: registries (Docker
        Hub above all) send from addresses that others share, whose guesses must not hold back a real push."""
        hosts, given = self._hook_hosts(scope)
        if hosts is not None:
            scope[HOOK_HOSTS_SCOPE] = hosts
            return None
        if (wait_s := await self._throttle.wait_s(Door.HOOKS, _client(scope))) is not None:
            return _throttled(wait_s)
        return await self._unauthorized(scope, Door.HOOKS, given,
                                        "a valid webhook token is required (one of IMAGEBUILDER_WEBHOOK_TOKENS)")

    def _hook_hosts(self, scope: Scope) -> tuple[frozenset[str] | None, bool]:
        """The matching token's hosts (None if none matched), and whether a token was given at all."""
        path = scope["path"]
        if path == REGISTRY_HOOK_PATH:
            authorization = _header(scope, b"authorization")
            return self._hook_tokens.hosts_of_header(authorization), bool(authorization)
        in_path = _DOCKER_HUB_HOOK_PATH.fullmatch(path)
        if in_path is None:
            return None, False
        return self._hook_tokens.hosts_of(in_path["token"].encode("utf-8", "replace")), True

    async def _unauthorized(self, scope: Scope, door: Door, guessed: bool, detail: str) -> Refusal:
        """401; a credential that was given and failed counts toward throttling its client at this door."""
        if guessed and (wait_s := await self._throttle.failed(door, _client(scope))) is not None:
            return _throttled(wait_s)
        return _answering(401, detail, {"www-authenticate": "Bearer"})

    async def _live_log_follower(self, scope: Scope) -> bool:
        """A console page following a build's log live: its session opens that route, and no other API route."""
        return (scope["method"] == "GET" and bool(_LIVE_LOG_PATH.fullmatch(scope["path"]))
                and not _header(scope, b"authorization") and await self._signed_in(scope))

    def _is_public(self, path: str) -> bool:
        return path in self._public or path.startswith(CONSOLE_STATIC_PREFIX)

    async def _signed_in(self, scope: Scope) -> bool:
        session_id = cookie_parser(_header(scope, b"cookie").decode("latin-1")).get(SESSION_COOKIE, "")
        if not session_id or not await self._sessions.valid(session_id):
            return False
        scope[SESSION_SCOPE] = session_id
        return True

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


def _client(scope: Scope) -> str:
    """The client's address (the proxy's X-Forwarded-For where IMAGEBUILDER_TRUSTED_PROXIES trusts it)."""
    client = scope.get("client")
    return client[0] if client else UNKNOWN_CLIENT


def _throttled(wait_s: int) -> Refusal:
    return _answering(429, f"too many failed attempts from this address; try again in {wait_s} s",
                      {"retry-after": str(wait_s)})


def _answering(status: int, detail: str, headers: dict[str, str] | None = None) -> Refusal:
    return lambda send: answer(send, status, detail, headers)


class HookTokensHidden(logging.Filter):
    """Keeps Docker Hub's webhook token, which is in its path, out of the access log (uvicorn's record args are
    client, method, path, HTTP version, status)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], hide_hook_token(args[2]), *args[3:])
        return True


def hide_hook_token(path: str) -> str:
    """The path with whatever follows a `dockerhub` segment hidden, however the path is spelt."""
    return _DOCKER_HUB_TOKEN_IN_PATH.sub(r"\1[token hidden]", path)


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
