"""The one map from errors to HTTP responses, and the one error shape: ``{"error": {"code": ..., "message": ...}}``.

`HTTP_STATUS` gives each kind of domain error (`korall_workloads.common.errors`) its status; a raised error takes
the status of the nearest kind in its class hierarchy, and its own `code` and message. `install_error_handlers`
puts that map, request validation failures, Starlette's HTTP errors (unknown path, wrong method) and anything
unexpected behind one JSON shape, so a client never sees an HTML page, a traceback or an empty reply. Routes only
raise; none of them translates an exception.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from korall_workloads.common.errors import (
    DeadlineExceeded,
    InvalidInput,
    MalformedRequest,
    NotFound,
    ServiceError,
    TooLarge,
    Unavailable,
    UnsupportedMediaType,
)

log = logging.getLogger(__name__)

HTTP_STATUS: dict[type[ServiceError], int] = {
    MalformedRequest: 400,
    NotFound: 404,
    TooLarge: 413,
    UnsupportedMediaType: 415,
    InvalidInput: 422,
    ServiceError: 500,
    Unavailable: 503,
    DeadlineExceeded: 504,
}

_STARLETTE_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    429: "rate_limited",
    503: "not_ready",
    504: "timeout",
}
"""Codes for the HTTP errors Starlette raises itself (an unknown route is 404 `not_found`)."""


def http_status(error: ServiceError) -> int:
    """The status of the nearest kind of `error` in `HTTP_STATUS`."""
    return next(HTTP_STATUS[kind] for kind in type(error).__mro__ if kind in HTTP_STATUS)


def error_body(error: ServiceError) -> dict[str, Any]:
    """The JSON error document of a domain error (also sent in-band, e.g. as a Server-Sent Event)."""
    return _body(error.code, error.message)


def _body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def install_error_handlers(app: FastAPI, on_error: Callable[[str], None] | None = None) -> None:
    """Map every failure to the JSON error shape; `on_error(code)` is called for each one (metrics) if given."""

    def respond(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
        if on_error is not None:
            on_error(code)
        return JSONResponse(_body(code, message), status_code=status, headers=headers)

    @app.exception_handler(ServiceError)
    async def _service_error(_: Request, exc: ServiceError) -> JSONResponse:
        return respond(http_status(exc), exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()))
            parts.append(f"{where}: {err.get('msg', 'invalid')}")
        return respond(422, InvalidInput.code, "; ".join(parts) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STARLETTE_CODES.get(exc.status_code, f"http_{exc.status_code}")
        headers = dict(exc.headers) if exc.headers else None
        return respond(exc.status_code, code, str(exc.detail), headers)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error: %s", exc)
        return respond(500, ServiceError.code, f"unexpected {type(exc).__name__}; see the service log")
