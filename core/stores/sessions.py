"""Console sessions in Redis: under a hash of each session's id (never the id), the one-way fingerprint of the API
token that opened it, for as long as the session lasts."""

from __future__ import annotations

import hashlib
import json
import secrets

import redis.asyncio

from core.stores.connection import store_errors

SESSION_KEY = "imagebuilder:session:{digest}"  # JSON {"token": fingerprint}, expiring with the session
SESSION_ID_BYTES = 32
MAX_SESSION_ID_CHARS = 64


def _key(session_id: str) -> str:
    return SESSION_KEY.format(digest=hashlib.sha256(session_id.encode()).hexdigest())


def _plausible(session_id: str) -> bool:
    return 0 < len(session_id) <= MAX_SESSION_ID_CHARS


class SessionStore:
    """Opens, finds and ends sessions, each kept for `max_age_s` seconds."""

    def __init__(self, client: redis.asyncio.Redis, *, max_age_s: int):
        self._redis = client
        self._max_age_s = max_age_s

    async def open(self, fingerprint: str) -> str:
        """A new session's id, for the token with this fingerprint."""
        session_id = secrets.token_urlsafe(SESSION_ID_BYTES)
        with store_errors():
            await self._redis.set(_key(session_id), json.dumps({"token": fingerprint}), ex=self._max_age_s)
        return session_id

    async def fingerprint(self, session_id: str) -> str | None:
        """The fingerprint of the token that opened the session; None if it has ended or never began."""
        if not _plausible(session_id):
            return None
        with store_errors():
            raw = await self._redis.get(_key(session_id))
        fields = json.loads(raw) if raw else None
        found = fields.get("token") if isinstance(fields, dict) else None
        return found if isinstance(found, str) else None

    async def end(self, session_id: str) -> None:
        if _plausible(session_id):
            with store_errors():
                await self._redis.delete(_key(session_id))
