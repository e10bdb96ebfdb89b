"""Build records in Redis: the BuildResult of each build id, kept for the result retention."""

from __future__ import annotations

import redis

from worker.errors import UnknownBuild
from worker.result import BuildResult

RECORD_KEY = "imagebuilder:build:{id}"


def unknown_build(build_id: str) -> UnknownBuild:
    return UnknownBuild(f"no build with id {build_id!r} (never submitted, or its record has expired)")


class BuildRecords:
    """Reads and writes BuildResult records; the producer creates them, the worker advances them."""

    def __init__(self, client: redis.Redis, *, expires_s: int):
        self._redis = client
        self._expires_s = expires_s

    def save(self, result: BuildResult) -> None:
        self._redis.set(RECORD_KEY.format(id=result.id), result.to_json(), ex=self._expires_s)

    def find(self, build_id: str) -> BuildResult | None:
        raw = self._redis.get(RECORD_KEY.format(id=build_id))
        return BuildResult.model_validate_json(raw) if raw else None

    def get(self, build_id: str) -> BuildResult:
        result = self.find(build_id)
        if result is None:
            raise unknown_build(build_id)
        return result

    def delete(self, build_id: str) -> None:
        self._redis.delete(RECORD_KEY.format(id=build_id))
