"""The build result: one model for the record in Redis, the Celery result, the CLI and the client."""

from __future__ import annotations

from datetime import datetime, timezone

from pydantic import BaseModel, ConfigDict

from core.phases import BuildPhase, BuildStep


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class BuildResult(BaseModel):
    """What is known about one build, from submission to its final phase."""

    model_config = ConfigDict(extra="ignore")

    id: str
    phase: BuildPhase = BuildPhase.PENDING
    step: BuildStep | None = None
    image: str
    digest: str | None = None
    base_digest: str | None = None
    skipped: bool = False
    worker: str | None = None
    error: str | None = None
    submitted_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def succeeded(self) -> bool:
        return self.phase is BuildPhase.SUCCEEDED

    def to_json(self) -> str:
        return self.model_dump_json()
