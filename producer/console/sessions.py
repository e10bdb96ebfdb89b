"""Console sessions: a signed, expiring cookie that names the API token that signed in by a fingerprint, never the
token itself. The signing key is derived from the API tokens, so every API replica agrees on it without one more
secret, and removing a token from IMAGEBUILDER_API_TOKENS ends its sessions."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from itsdangerous import BadSignature, URLSafeTimedSerializer

SESSION_COOKIE = "imagebuilder_session"
_KEY_CONTEXT = b"imagebuilder console session key"


class Sessions:
    """Signs a session for a valid token and checks sessions, each for at most `max_age_s`."""

    def __init__(self, tokens: Iterable[str], max_age_s: int):
        tokens = sorted(tokens)
        self.secret = hmac.new(_KEY_CONTEXT, "\0".join(tokens).encode(), hashlib.sha256).hexdigest()
        self.max_age_s = max_age_s
        self._fingerprints = [self._fingerprint(token) for token in tokens]
        self._serializer = URLSafeTimedSerializer(self.secret, salt="session")

    def _fingerprint(self, token: str) -> str:
        return hmac.new(self.secret.encode(), token.encode(), hashlib.sha256).hexdigest()

    def _known(self, fingerprint: str) -> bool:
        known = False
        for candidate in self._fingerprints:  # every one compared, in constant time, whichever matches
            known |= hmac.compare_digest(candidate, fingerprint)
        return known

    def sign_in(self, token: str) -> str | None:
        """A session cookie value for a valid API token; None for any other text."""
        fingerprint = self._fingerprint(token)
        return self._serializer.dumps({"token": fingerprint}) if self._known(fingerprint) else None

    def valid(self, cookie: str) -> bool:
        """True for a session this service signed, not older than `max_age_s`, whose token is still valid."""
        try:
            fields = self._serializer.loads(cookie, max_age=self.max_age_s)
        except BadSignature:  # expiry is a BadSignature too (SignatureExpired)
            return False
        return isinstance(fields, dict) and isinstance(fields.get("token"), str) and self._known(fields["token"])
