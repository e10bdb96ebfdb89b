"""The service's own routes: the probes (`/readyz`, `/healthz`, no token) and `/metrics`."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel

from producer.api.deps import BEARER, Client
from producer.api.errors import documented_as_json

router = APIRouter(tags=["service"])


class Health(BaseModel):
    """`/healthz`: 200 when Redis answers and at least one worker was seen in the last half minute."""

    redis: bool
    workers: int


class Readiness(BaseModel):
    """`/readyz`: 200 when Redis answers, however many workers there are (they may be scaled to zero)."""

    redis: bool


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness, "description": "not ready"}})
def readyz(client: Client) -> JSONResponse:
    """No token needed: ready to accept builds when Redis answers, even with every worker scaled to zero."""
    try:
        ready = Readiness(redis=client.service.redis_answers())
    except Exception:  # any failure to answer means not ready; the probe itself must never fail
        ready = Readiness(redis=False)
    return JSONResponse(ready.model_dump(), status_code=200 if ready.redis else 503)


@router.get("/healthz", response_model=Health, responses={503: {"model": Health, "description": "unhealthy"}})
def healthz(client: Client) -> JSONResponse:
    """No token needed: Redis reachable and workers seen."""
    try:
        health = Health(redis=client.service.redis_answers(), workers=client.service.workers_seen())
    except Exception:  # any failure to answer means unhealthy; the probe itself must never fail
        health = Health(redis=False, workers=0)
    return JSONResponse(health.model_dump(), status_code=200 if health.redis and health.workers > 0 else 503)


@router.get("/metrics", dependencies=[BEARER], response_class=PlainTextResponse,
            responses={**documented_as_json(401, 429, 503), 200: {"content": {CONTENT_TYPE_LATEST: {}}}})
def prometheus(client: Client) -> Response:
    return Response(client.service.metrics_text(), media_type=CONTENT_TYPE_LATEST)
