"""Console sessions, kept in Redis so that signing out ends one on the server: the cookie carries a random session
id; Redis holds, under a hash of that id and for the session's life, only a fingerprint of the API token that
signed in, so removing the token from IMAGEBUILDER_API_TOKENS ends every session it opened. Each session has its
own CSRF token, derived from its id."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Iterable

import redis.asyncio
from asgi_csrf import DEFAULT_COOKIE_NAME as CSRF_COOKIE
from asgi_csrf import DEFAULT_SIGNING_NAMESPACE
from itsdangerous import URLSafeSerializer

from worker.stores import store_errors

SESSION_COOKIE = "imagebuilder_session"
SESSION_KEY = "imagebuilder:session:{digest}"  # JSON {"token": fingerprint}, expiring with the session
SESSION_ID_BYTES = 32
MAX_SESSION_ID_CHARS = 64
_KEY_CONTEXT = b"imagebuilder console signing key"
_FINGERPRINT_CONTEXT = b"imagebuilder console token fingerprint"


def _fingerprint(token: str) -> str:
    """A one-way fingerprint of an API token (the same in every API replica), never the token."""
    return hmac.new(_FINGERPRINT_CONTEXT, token.encode(), hashlib.sha256).hexdigest()


def _key(session_id: str) -> str:
    return SESSION_KEY.format(digest=hashlib.sha256(session_id.encode()).hexdigest())


class Sessions:
    """Opens a session for a valid API token, checks and ends sessions, each lasting at most `max_age_s`."""

    def __init__(self, tokens: Iterable[str], max_age_s: int, client: redis.asyncio.Redis):
        tokens = sorted(tokens)
        # Signs the CSRF tokens (asgi-csrf's, and the per-session ones): the same in every replica, no new secret.
        self.secret = hmac.new(_KEY_CONTEXT, "\0".join(tokens).encode(), hashlib.sha256).hexdigest()
        self.max_age_s = max_age_s
        self._fingerprints = [_fingerprint(token) for token in tokens]
        self._redis = client
        self._csrf_signer = URLSafeSerializer(self.secret)

    def _known(self, fingerprint: str) -> bool:
        known = False
        for candidate in self._fingerprints:  # every one compared, in constant time, whichever matches
            known |= hmac.compare_digest(candidate, fingerprint)
        return known

    async def sign_in(self, token: str) -> str | None:
        """A new session's id (the cookie's value) for a valid API token; None for any other text."""
        fingerprint = _fingerprint(token)
        if not self._known(fingerprint):
            return None
        session_id = secrets.token_urlsafe(SESSION_ID_BYTES)
        with store_errors():
            await self._redis.set(_key(session_id), json.dumps({"token": fingerprint}), ex=self.max_age_s)
        return session_id

    async def sign_out(self, session_id: str) -> None:
        """End the session: its cookie, replayed, opens nothing."""
        if 0 < len(session_id) <= MAX_SESSION_ID_CHARS:
            with store_errors():
                await self._redis.delete(_key(session_id))

    async def valid(self, session_id: str) -> bool:
        """True for a session that was opened here, has not ended or expired, and whose token is still valid."""
        if not 0 < len(session_id) <= MAX_SESSION_ID_CHARS:
            return False
        with store_errors():
            raw = await self._redis.get(_key(session_id))
        fields = json.loads(raw) if raw else None
        return isinstance(fields, dict) and isinstance(fields.get("token"), str) and self._known(fields["token"])

    def csrf_token(self, session_id: str) -> str:
        """The session's own CSRF token, in asgi-csrf's signed form: a form from another session never matches."""
        bound = hmac.new(self.secret.encode(), session_id.encode(), hashlib.sha256).hexdigest()
        return self._csrf_signer.dumps(bound, DEFAULT_SIGNING_NAMESPACE)
