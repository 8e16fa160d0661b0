"""One error shape for every workload endpoint: ``{"error": {"code": ..., "message": ...}}``.

Handlers raise `ApiError` (or a subclass with a fixed status and code); `install_error_handlers` maps it,
request validation failures, HTTP errors from Starlette and anything unexpected to that JSON shape in one
place, so a client never sees an HTML page, a traceback or an empty reply.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error with an HTTP status and a stable machine-readable code."""

    status: int = 500
    code: str = "internal_error"

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(code, message), status_code=status, headers=headers)


_HTTP_CODES = {
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


def install_error_handlers(app: FastAPI, on_error: Any = None) -> None:
    """Map every failure to the JSON error shape; `on_error(code)` is called for metrics if given."""

    def _respond(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
        if on_error is not None:
            on_error(code)
        return error_response(status, code, message, headers)

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _respond(exc.status, exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()))
            parts.append(f"{where}: {err.get('msg', 'invalid')}")
        return _respond(422, "invalid_input", "; ".join(parts) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
        headers = dict(exc.headers) if exc.headers else None
        return _respond(exc.status_code, code, str(exc.detail), headers)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error: %s", exc)
        return _respond(500, "internal_error", f"unexpected {type(exc).__name__}; see the service log")


# Errors with a fixed status and code, shared by both services. Raise them with a message a user can act on.


class BadRequest(ApiError):
    status = 400
    code = "bad_request"


class PayloadTooLarge(ApiError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(ApiError):
    status = 415
    code = "unsupported_media_type"


class InvalidInput(ApiError):
    status = 422
    code = "invalid_input"


class NotReady(ApiError):
    status = 503
    code = "not_ready"


class Timeout(ApiError):
    status = 504
    code = "timeout"
