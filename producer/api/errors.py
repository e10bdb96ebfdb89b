"""The API's error answers: their one JSON shape, how each is documented in OpenAPI (from the outcome table and the
edge's own answers), and the handlers that turn the domain's errors into them."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.errors import ImageBuilderError
from core.outcomes import OUTCOMES, outcome_of
from producer.edge import CONSOLE_PREFIX

# FastAPI answers 400 itself, in the API's JSON shape, to a JSON body it cannot decode or that nests too deeply.
UNREADABLE_BODY = "the body is not UTF-8, or its JSON is nested too deeply"
FASTAPI_UNREADABLE_BODY = "There was an error parsing the body"  # what FastAPI itself says then


class ErrorBody(BaseModel):
    """Every error answer: `detail` says what is wrong (for 422, the field and the rule)."""

    detail: str


def _described(status: int) -> str:
    """What an error status means, from the outcome table and the edge's own answers."""
    described = {401: ["missing or unknown bearer token"], 413: ["the request body is too large"],
                 429: ["too many failed credentials from this address lately: try again after Retry-After seconds"]}
    for _, outcome in OUTCOMES:
        described.setdefault(outcome.status, []).append(outcome.what)
    return "; ".join(described[status])


def documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these error statuses, described from the outcome table."""
    return {status: {"model": ErrorBody, "description": _described(status)} for status in statuses}


def documented_as_json(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The same for a route whose own answer is not JSON: FastAPI would document a `model` in the route's media
    type (text/plain), but its errors are JSON all the same."""
    content = {"application/json": {"schema": ErrorBody.model_json_schema()}}
    return {status: {"description": _described(status), "content": content} for status in statuses}


ERRORS = documented(401, 422, 429, 503)
BODY_ERRORS = {**documented(401, 413, 422, 429, 503), 400: {"model": ErrorBody, "description": UNREADABLE_BODY}}


async def answer_error(request: Request, error: Exception) -> Response:
    """The status the outcome table gives the error. A bug's details stay out of the answer; Starlette logs its
    traceback, for the catch-all handler re-raises after answering."""
    detail = str(error) if isinstance(error, ImageBuilderError) else "internal error"
    outcome = outcome_of(error)
    response = _error(request, outcome.status, detail)
    if outcome.retry_after_s:
        response.headers["Retry-After"] = str(outcome.retry_after_s)
    return response


async def answer_invalid_request(request: Request, error: RequestValidationError) -> Response:
    problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors())
    return _error(request, 422, f"invalid request: {problems}")


async def answer_http_error(request: Request, error: StarletteHTTPException) -> Response:
    """Routing's own answers (404 for an unknown path, 405), and FastAPI's 400 for a JSON body it could not decode
    (said plainly): a console page on the console, else as FastAPI gives."""
    if error.status_code == 400 and error.detail == FASTAPI_UNREADABLE_BODY:
        error = StarletteHTTPException(400, f"body: {UNREADABLE_BODY}")
    if request.url.path.startswith(CONSOLE_PREFIX):
        return _error(request, error.status_code, str(error.detail))
    return await http_exception_handler(request, error)


def _error(request: Request, status: int, detail: str) -> Response:
    """The API's JSON error body; a console page of its own for the console's routes."""
    if request.url.path.startswith(CONSOLE_PREFIX):
        return request.app.state.console.error(request, status, detail)
    return JSONResponse({"detail": detail}, status_code=status)
