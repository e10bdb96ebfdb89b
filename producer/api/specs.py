"""`/specs`: stored specs (apply, list, show with their chain, delete), their builds and their history."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query
from fastapi.responses import Response
from pydantic import BaseModel

from core.result import BuildResult
from core.spec import spec_named
from core.stored import HistoryEntry, StoredSpec
from producer.api.deps import BEARER, SPEC_EXAMPLE, Client
from producer.api.errors import BODY_ERRORS, ERRORS, documented
from producer.overview import MAX_PAGE_ITEMS, SpecDetail, SpecListing

DEFAULT_PAGE_ITEMS = 100
MAX_OFFSET = 1_000_000
MAX_NAME_FILTER_CHARS = 128

router = APIRouter(prefix="/specs", tags=["specs"], dependencies=[BEARER])


class AppliedSpec(BaseModel):
    """`PUT /specs/{name}`: the stored spec, and the build it started if it is new or its tag changed."""

    stored: StoredSpec
    build: BuildResult | None = None


@router.put("/{name}", response_model=AppliedSpec, responses={**BODY_ERRORS, **documented(403, 409)})
def apply(client: Client, name: str, spec: Annotated[dict[str, Any], Body(examples=[SPEC_EXAMPLE])]) -> AppliedSpec:
    """Create or update a stored spec (any accepted shape; the name comes from the path if the body has none);
    a new spec, or an edit that changes its tag, is built at once."""
    stored, build = client.specs.apply(spec_named(spec, name))
    return AppliedSpec(stored=stored, build=build)


@router.get("", response_model=list[SpecListing], responses=ERRORS)
def list_specs(client: Client, response: Response, offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
               limit: Annotated[int, Query(ge=1, le=MAX_PAGE_ITEMS)] = DEFAULT_PAGE_ITEMS,
               name: Annotated[str, Query(max_length=MAX_NAME_FILTER_CHARS)] = "") -> list[SpecListing]:
    """A page of stored specs in name order (those whose name contains `name`), each with its newest build and
    its schedule; `X-Total-Count` says how many match in all."""
    page = client.specs.page(offset=offset, limit=limit, contains=name)
    response.headers["X-Total-Count"] = str(page.total)
    return page.items


@router.get("/{name}", response_model=SpecDetail, responses={**ERRORS, **documented(404)})
def show(client: Client, name: str) -> SpecDetail:
    """The stored spec, with `upstream` (the stored spec whose image it is built on) and `downstream` (those
    built on its images), which rebuild after it."""
    return client.specs.detail(name)


@router.delete("/{name}", status_code=204, responses={**ERRORS, **documented(404)})
def delete(client: Client, name: str) -> Response:
    client.specs.delete(name)
    return Response(status_code=204)


@router.post("/{name}/builds", status_code=202, response_model=BuildResult,
             responses={**ERRORS, **documented(403, 404)})
def build(client: Client, name: str, force: Annotated[bool, Query()] = False) -> BuildResult:
    return client.specs.build(name, force=force)


@router.get("/{name}/history", response_model=list[HistoryEntry], responses={**ERRORS, **documented(404)})
def history(client: Client, name: str) -> list[HistoryEntry]:
    return client.specs.history(name)
