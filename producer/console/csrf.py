"""CSRF protection for the console's forms: asgi-csrf's signed double-submit cookie, checked on /ui/ only (the API
takes bearer tokens, which a browser never sends on its own). Once signed in, the token a form must carry is the
session's own (Sessions.csrf_token): asgi-csrf is shown it in place of the browser's cookie, so a token issued for
another session, or planted in a cookie, never passes.

asgi-csrf raises on some malformed bodies (a form that is not UTF-8, a multipart body without a boundary) while it
looks for the token. Those are the sender's fault, so they are answered 400 here, not 500; an error raised once
the request has passed the check is the app's, and goes on up."""

from __future__ import annotations

from asgi_csrf import asgi_csrf

from producer.console.sessions import CSRF_COOKIE, SESSION_COOKIE, Sessions
from producer.edge import (
    CONSOLE_PREFIX,
    SESSION_SCOPE,
    ASGIApp,
    Receive,
    Scope,
    Send,
    answer,
)

_PASSED = "imagebuilder.csrf_passed"
# Signing in and out change state too, and may come with no cookie at all (which asgi-csrf otherwise lets by).
ALWAYS_PROTECTED = frozenset({"/ui/login", "/ui/logout"})


class CsrfChecked:
    """Every state-changing console request must carry the form field (or header) that matches its cookie."""

    def __init__(self, app: ASGIApp, *, sessions: Sessions):
        self._sessions = sessions
        self._checked = asgi_csrf(_marking(app), signing_secret=sessions.secret, cookie_samesite="Strict",
                                  always_protect=ALWAYS_PROTECTED, skip_if_scope=_not_console)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        passed = [False]
        if scope["type"] == "http" and SESSION_SCOPE in scope:
            scope = {**scope, "headers": self._session_bound(scope)}
        try:
            await self._checked({**scope, _PASSED: passed}, receive, send)
        except (UnicodeDecodeError, IndexError, ValueError, AssertionError):
            if passed[0]:
                raise
            await answer(send, 400, "the form could not be read")

    def _session_bound(self, scope: Scope) -> list[tuple[bytes, bytes]]:
        """The request's headers with its cookies replaced by the two the console reads: the session, and the
        session's own CSRF token. Nothing the browser sent besides is passed on, so no cookie crafted to unquote
        into another `csrftoken=` can stand in for it."""
        session_id = scope[SESSION_SCOPE]
        cookie = f"{SESSION_COOKIE}={session_id}; {CSRF_COOKIE}={self._sessions.csrf_token(session_id)}"
        return [*((k, v) for k, v in scope["headers"] if k.lower() != b"cookie"), (b"cookie", cookie.encode())]


def _marking(app: ASGIApp) -> ASGIApp:
    async def passed(scope: Scope, receive: Receive, send: Send) -> None:
        scope[_PASSED][0] = True
        await app(scope, receive, send)

    return passed


def _not_console(scope: Scope) -> bool:
    return not scope["path"].startswith(CONSOLE_PREFIX)
