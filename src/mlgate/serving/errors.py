"""Error bodies, one shape per protocol: MLflow's ``{"error_code", "message"}`` everywhere except under
``/v2``, where the Open Inference Protocol's ``{"error": message}`` is used. No body ever carries a traceback
or a server path."""

from __future__ import annotations

import json
import reprlib
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

V2_PREFIX = "/v2"
MAX_LISTED_ERRORS = 10
CODES = {
    400: "BAD_REQUEST",
    404: "RESOURCE_DOES_NOT_EXIST",
    405: "METHOD_NOT_ALLOWED",
    413: "REQUEST_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    422: "BAD_REQUEST",
    500: "INTERNAL_ERROR",
    503: "TEMPORARILY_UNAVAILABLE",
    504: "TIMEOUT",
}

_short = reprlib.Repr()
_short.maxstring, _short.maxother, _short.maxlevel, _short.maxlist, _short.maxdict = 60, 60, 3, 5, 5


def show(value: Any) -> str:
    """A short, bounded ``repr`` of a request value for an error message (never deep, never long)."""
    return _short.repr(value)


class ErrorBody(BaseModel):
    """MLflow's error shape, used by every route outside /v2."""

    error_code: str = Field(description="An MLflow error code, e.g. BAD_REQUEST.")
    message: str = Field(description="What is wrong, naming the column or field.")


class V2ErrorBody(BaseModel):
    """The Open Inference Protocol's error shape, used by every /v2 route."""

    error: str


def json_response(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
    """A compact JSON response."""
    return Response(
        json.dumps(payload, separators=(",", ":")).encode(),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def error(status: int, message: str, path: str = "", code: str | None = None) -> Response:
    """The error response of the protocol that ``path`` belongs to (503 says when to retry)."""
    headers = {"Retry-After": "1"} if status == 503 else None
    if path.startswith(V2_PREFIX):
        return json_response(status, {"error": message}, headers)
    return json_response(
        status, {"error_code": code or CODES.get(status, "BAD_REQUEST"), "message": message}, headers
    )


def validation_message(errors: list[dict[str, Any]]) -> str:
    """One line naming each failing field of a pydantic validation error (the input is never echoed)."""
    parts = []
    for err in errors[:MAX_LISTED_ERRORS]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    more = len(errors) - MAX_LISTED_ERRORS
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def install_handlers(app: FastAPI) -> None:
    """Framework errors (404, 405, validation) in the protocol's error shape (unexpected exceptions are
    answered by the app's middleware, which knows the request id)."""

    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        message = {404: "no such route", 405: f"method {request.method} is not allowed here"}.get(
            exc.status_code, str(exc.detail)
        )
        response = error(exc.status_code, message, request.url.path)
        response.headers.update(exc.headers or {})
        return response

    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        return error(422, validation_message(list(exc.errors())), request.url.path)

    app.add_exception_handler(StarletteHTTPException, http_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, invalid)  # type: ignore[arg-type]
