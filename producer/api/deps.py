"""What every route takes from the app it runs in: the one client, the live logs; and the bearer scheme, which the
edge enforces before FastAPI sees a request (declared here for OpenAPI only)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPBearer

from producer.client import BuildClient
from producer.livelog import LiveLogs

BEARER = Security(HTTPBearer(auto_error=False, description="one of IMAGEBUILDER_API_TOKENS"))
SPEC_EXAMPLE = {"name": "test-build", "baseImage": "debian:bookworm", "packages": {"apt": ["jq"]}}


def _client(request: Request) -> BuildClient:
    return request.app.state.client


def _live_logs(request: Request) -> LiveLogs:
    return request.app.state.live_logs


Client = Annotated[BuildClient, Depends(_client)]
Live = Annotated[LiveLogs, Depends(_live_logs)]
