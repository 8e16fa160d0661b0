"""The one map from errors to HTTP responses, and the one error shape: ``{"error": {"code": ..., "message": ...}}``.

`HTTP_STATUS` gives each kind of domain error (`korall_workloads.common.errors`) its status; a raised error takes
the status of the nearest kind in its class hierarchy, and its own `code` and message. `install_error_handlers`
puts that map, request validation failures, Starlette's HTTP errors (unknown path, wrong method) and anything
unexpected behind one JSON shape, so a client never sees an HTML page, a traceback or an empty reply. Routes only
raise; none of them translates an exception.

Two more users of the same map: `error_response` for the HTTP guard (auth, rate limits, load shedding), which
answers before any route runs, and `raw_error_response` for the HTTP server itself (`common.server`), which
refuses a malformed or oversized request head, a slow one, or a connection over the cap before the app sees it.
"""

from __future__ import annotations

import http
import json
import logging
import math
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from korall_workloads.common.errors import (
    DeadlineExceeded,
    Forbidden,
    HeadTooLarge,
    InvalidInput,
    MalformedRequest,
    NotFound,
    RateLimited,
    RequestTimeout,
    ServiceError,
    TooLarge,
    Unauthenticated,
    Unavailable,
    UnsupportedMediaType,
)

log = logging.getLogger(__name__)

HTTP_STATUS: dict[type[ServiceError], int] = {
    MalformedRequest: 400,
    Unauthenticated: 401,
    Forbidden: 403,
    NotFound: 404,
    RequestTimeout: 408,
    TooLarge: 413,
    UnsupportedMediaType: 415,
    InvalidInput: 422,
    RateLimited: 429,
    HeadTooLarge: 431,
    ServiceError: 500,
    Unavailable: 503,
    DeadlineExceeded: 504,
}

CLOSES_CONNECTION = frozenset({408, 413, 431})
"""Answered before the request was read to its end: the rest of it is never read, so the connection closes."""

AUTH_REALM = "korall"

ERROR_CODE_KEY = "korall.error_code"
"""Where an error reply leaves its code in the request's ASGI scope, for the access log."""

_STARLETTE_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
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


def error_headers(error: ServiceError, status: int) -> dict[str, str]:
    """The headers a kind of error needs: the Bearer challenge (RFC 6750), Retry-After, Connection: close."""
    headers: dict[str, str] = {}
    if isinstance(error, Unauthenticated):
        challenge = f'Bearer realm="{AUTH_REALM}"'
        if error.invalid_token:
            challenge += ', error="invalid_token"'
        headers["WWW-Authenticate"] = challenge
    elif isinstance(error, Forbidden):
        headers["WWW-Authenticate"] = f'Bearer realm="{AUTH_REALM}", error="insufficient_scope", scope="{error.scope}"'
    if error.retry_after_s is not None:
        headers["Retry-After"] = str(max(1, math.ceil(error.retry_after_s)))
    if status in CLOSES_CONNECTION:
        headers["Connection"] = "close"
    return headers


def error_response(error: ServiceError) -> JSONResponse:
    """The whole response of a domain error, for code that answers outside the routes (the HTTP guard)."""
    status = http_status(error)
    return JSONResponse(error_body(error), status_code=status, headers=error_headers(error, status) or None)


def raw_error_response(error: ServiceError) -> bytes:
    """A complete HTTP/1.1 response for the HTTP server to write itself (then it closes the connection)."""
    status = http_status(error)
    body = json.dumps(error_body(error), separators=(",", ":")).encode()
    headers = {**error_headers(error, status), "Connection": "close"}
    lines = [f"HTTP/1.1 {status} {_phrase(status)}", "Content-Type: application/json", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return ""


def install_error_handlers(app: FastAPI, on_error: Callable[[str], None] | None = None) -> None:
    """Map every failure to the JSON error shape; `on_error(code)` is called for each one (metrics) if given."""

    def respond(
        request: Request, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> JSONResponse:
        request.scope[ERROR_CODE_KEY] = code
        if on_error is not None:
            on_error(code)
        return JSONResponse(_body(code, message), status_code=status, headers=headers)

    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError) -> JSONResponse:
        status = http_status(exc)
        return respond(request, status, exc.code, exc.message, error_headers(exc, status) or None)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts: dict[str, None] = {}  # ordered and once each: a parameter shared with a dependency fails twice
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()))
            parts[f"{where}: {err.get('msg', 'invalid')}"] = None
        return respond(request, 422, InvalidInput.code, "; ".join(parts) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STARLETTE_CODES.get(exc.status_code, f"http_{exc.status_code}")
        headers = dict(exc.headers) if exc.headers else None
        return respond(request, exc.status_code, code, str(exc.detail), headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error: %s", exc)
        return respond(request, 500, ServiceError.code, f"unexpected {type(exc).__name__}; see the service log")
