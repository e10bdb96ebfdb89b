"""Console sessions that close: the cookie carries a random session id; its store (core.stores.sessions) keeps only a
fingerprint of the API token that signed in, so signing out ends the session for good and removing the token from
IMAGEBUILDER_API_TOKENS ends every session it opened. Each session has its own CSRF token, derived from its id."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from asgi_csrf import DEFAULT_COOKIE_NAME, DEFAULT_SIGNING_NAMESPACE
from itsdangerous import URLSafeSerializer

from core.stores.sessions import SessionStore

SESSION_COOKIE = "imagebuilder_session"
CSRF_COOKIE = DEFAULT_COOKIE_NAME  # asgi-csrf's; at sign-in it takes the session's own token
_KEY_CONTEXT = b"imagebuilder console signing key"
_FINGERPRINT_CONTEXT = b"imagebuilder console token fingerprint"


def _fingerprint(token: str) -> str:
    """A one-way fingerprint of an API token (the same in every API replica), never the token."""
    return hmac.new(_FINGERPRINT_CONTEXT, token.encode(), hashlib.sha256).hexdigest()


class Sessions:
    """Opens a session for a valid API token, checks and ends sessions, each lasting at most `max_age_s`."""

    def __init__(self, tokens: Iterable[str], max_age_s: int, store: SessionStore):
        tokens = sorted(tokens)
        # Signs the CSRF tokens (asgi-csrf's, and the per-session ones): the same in every replica, no new secret.
        self.secret = hmac.new(_KEY_CONTEXT, "\0".join(tokens).encode(), hashlib.sha256).hexdigest()
        self.max_age_s = max_age_s
        self._fingerprints = [_fingerprint(token) for token in tokens]
        self._store = store
        self._csrf_signer = URLSafeSerializer(self.secret)

    def _known(self, fingerprint: str) -> bool:
        known = False
        for candidate in self._fingerprints:  # every one compared, in constant time, whichever matches
            known |= hmac.compare_digest(candidate, fingerprint)
        return known

    async def sign_in(self, token: str) -> str | None:
        """A new session's id (the cookie's value) for a valid API token; None for any other text."""
        fingerprint = _fingerprint(token)
        return await self._store.open(fingerprint) if self._known(fingerprint) else None

    async def sign_out(self, session_id: str) -> None:
        """End the session: its cookie, replayed, opens nothing."""
        await self._store.end(session_id)

    async def valid(self, session_id: str) -> bool:
        """True for a session that was opened here, has not ended or expired, and whose token is still valid."""
        fingerprint = await self._store.fingerprint(session_id)
        return fingerprint is not None and self._known(fingerprint)

    def csrf_token(self, session_id: str) -> str:
        """The session's own CSRF token, in asgi-csrf's signed form: a form from another session never matches."""
        bound = hmac.new(self.secret.encode(), session_id.encode(), hashlib.sha256).hexdigest()
        return self._csrf_signer.dumps(bound, DEFAULT_SIGNING_NAMESPACE)
