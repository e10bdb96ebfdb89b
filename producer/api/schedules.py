"""Schedules: `/specs/{name}/schedule` (set, show, remove) and `/schedules` (every one, with its state)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body
from fastapi.responses import Response
from pydantic import BaseModel

from core.schedule import Policy, Schedule
from producer.api.deps import BEARER, Client
from producer.api.errors import BODY_ERRORS, ERRORS, documented

router = APIRouter(tags=["schedules"], dependencies=[BEARER])


class ScheduleBody(BaseModel):
    """`PUT /specs/{name}/schedule`: a cron expression read in `tz`, or an interval in seconds."""

    cron: str | None = None
    every_s: int | None = None
    tz: str = "UTC"
    policy: Policy = Policy.ON_BASE_CHANGE


@router.put("/specs/{name}/schedule", response_model=Schedule, responses={**BODY_ERRORS, **documented(404)})
def set_schedule(client: Client, name: str, body: Annotated[ScheduleBody, Body()]) -> Schedule:
    """Schedule rebuilds: `cron` (+ `tz`) or `every_s`, with a `policy`; a cron that never fires is refused."""
    return client.schedules.set(name, **body.model_dump())


@router.get("/specs/{name}/schedule", response_model=Schedule, responses={**ERRORS, **documented(404)})
def get_schedule(client: Client, name: str) -> Schedule:
    """The schedule, with its state: last check, last error, and why it disabled itself, if it did."""
    return client.schedules.get(name)


@router.delete("/specs/{name}/schedule", status_code=204, responses={**ERRORS, **documented(404)})
def remove_schedule(client: Client, name: str) -> Response:
    client.schedules.remove(name)
    return Response(status_code=204)


@router.get("/schedules", response_model=list[Schedule], responses=ERRORS)
def list_schedules(client: Client) -> list[Schedule]:
    """Every schedule, with its state (as `imagebuilder schedule list` shows it)."""
    return client.schedules.all()
