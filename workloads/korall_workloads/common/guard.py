"""The HTTP guard of both services: rate limits, bearer tokens and the access log, before any route runs.

One pure ASGI middleware (Starlette's BaseHTTPMiddleware costs far more per request), outermost, so that it covers
every route there is or will be, a static-files mount included, and logs every request, refused ones too. In order:

1. /health and /ready (and /metrics unless AUTH_METRICS=true) are open: probes and scrapers need no token; they are
   only logged.
2. The client address's rate limit (RATE_LIMIT_PER_CLIENT): counted before the token is checked, so that guessing
   tokens is throttled too. Over it: 429 `rate_limited` with Retry-After.
3. With AUTH_TOKENS_FILE set, the token (`common.auth`), from, in this order:
   - `Authorization: Bearer <token>` (programs, curl);
   - the cookie `korall_token` (a browser page and everything it loads: its scripts, images, fetch() calls and
     EventSource streams send it by themselves);
   - `?access_token=<token>` on a GET (RFC 6750 section 2.3): how a person opens a page once; the reply then sets
     the cookie (HttpOnly, SameSite=Strict), so the page's own requests carry it and the link need not.
   None: 401 `unauthorized`; one that matches no token: 401 with `error="invalid_token"`; a token without the
   route's scope: 403 `forbidden` with `error="insufficient_scope"` (both with WWW-Authenticate, RFC 6750).
   Except the live page and its files (`/`, `/static/*`): they hold no data, and a browser cannot attach a
   header to the address it is asked to open, so they are served either way; the page asks for a token and
   sends it on every call. A valid token given with them still counts (`?access_token=` sets the cookie).
4. The token's rate limit (RATE_LIMIT_PER_TOKEN), by token name.
5. The access log line when the reply is done (`common.accesslog`).

Refusals are answered with the one error map's JSON (`responses.error_response`); which route needs which scope is
`required_scope`. Behind a proxy every client has the proxy's address: rate limits per client then count the proxy.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs

from fastapi.telemetry import TelemetryConfig
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from korall_workloads.common.accesslog import ACCESS_DETAIL_KEY, BYTES_IN_KEY, AccessLog
from korall_workloads.common.auth import Token, TokenStore
from korall_workloads.common.errors import Forbidden, RateLimited, ServiceError, Unauthenticated
from korall_workloads.common.http_settings import HttpSettings
from korall_workloads.common.pages import STATIC_PATH
from korall_workloads.common.ratelimit import RateLimits
from korall_workloads.common.responses import ERROR_CODE_KEY, error_response

NO_TELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}
"""FastAPI's native OpenTelemetry off (`FastAPI(telemetry=NO_TELEMETRY)`): the access log and the Prometheus metrics
are the services' telemetry, and asking OpenTelemetry whether it is configured reads the environment on every
request (found profiling the concurrency-1 overhead, issue 15)."""

TOKEN_COOKIE = "korall_token"
PROBE_PATHS = frozenset({"/health", "/ready"})
METRICS_PATH = "/metrics"


def is_page(path: str) -> bool:
    """The live page and its files (`common.pages`): served with or without a token."""
    return path == "/" or path.startswith(STATIC_PATH + "/")


def required_scope(method: str, path: str) -> str:
    """The scope a request needs: `metrics` for /metrics, `infer` to send work (POST and the like), else `read`."""
    if path == METRICS_PATH:
        return "metrics"
    return "read" if method in ("GET", "HEAD", "OPTIONS") else "infer"


class HttpGuard:
    """Pure ASGI middleware: rate limits, tokens, access log (see the module docstring).

    `on_response(route, status)` is told of every reply (the route's template, or "unmatched"), so that a service's
    request counter needs no middleware of its own.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        settings: HttpSettings,
        tokens: TokenStore | None,
        access: AccessLog | None = None,
        model_sha256: Callable[[], str | None] = lambda: None,
        on_error: Callable[[str], None] | None = None,
        on_response: Callable[[str, int], None] | None = None,
    ) -> None:
        self.app = app
        self.tokens = tokens
        self.limits = RateLimits(settings.limits_per_client(), settings.limits_per_token())
        self.open_paths = PROBE_PATHS if settings.auth_metrics else PROBE_PATHS | {METRICS_PATH}
        self.access = access
        self.model_sha256 = model_sha256
        self.on_error = on_error
        self.on_response = on_response

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        client = scope["client"][0] if scope.get("client") else "-"
        token: Token | None = None
        set_cookie: str | None = None
        refusal: ServiceError | None = None
        if scope["path"] not in self.open_paths:
            if self.limits.per_client and (wait := self.limits.retry_after("client", client)) is not None:
                refusal = RateLimited(
                    f"too many requests from {client} (RATE_LIMIT_PER_CLIENT); retry in {wait:.1f} s",
                    retry_after_s=wait,
                )
            elif self.tokens is not None:
                token, set_cookie, refusal = self._authenticate(scope)
                if refusal is not None and is_page(scope["path"]):
                    refusal = None  # no data in it: it asks for a token itself, and sends it on every API call
                if (
                    token is not None
                    and self.limits.per_token
                    and (wait := self.limits.retry_after("token", token.name)) is not None
                ):
                    refusal = RateLimited(
                        f"too many requests with token {token.name!r} (RATE_LIMIT_PER_TOKEN); retry in {wait:.1f} s",
                        retry_after_s=wait,
                    )
        sent = [500, 0]  # status, bytes out

        async def watched_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                sent[0] = message["status"]
                if set_cookie is not None:
                    headers = [*message.get("headers", ()), (b"set-cookie", set_cookie.encode())]
                    message = {**message, "headers": headers}
            elif message["type"] == "http.response.body":
                sent[1] += len(message.get("body", b""))
            await send(message)

        try:
            if refusal is not None:
                await self._refuse(refusal, scope, receive, watched_send)
            else:
                await self.app(scope, receive, watched_send)
        finally:
            if self.on_response is not None:
                route = scope.get("route")
                self.on_response(getattr(route, "path", None) or "unmatched", sent[0])
            if self.access is not None:
                self.access.record(
                    started,
                    client,
                    token.name if token is not None else None,
                    scope["method"],
                    scope["path"],
                    scope.get("query_string", b""),
                    sent[0],
                    scope.get(BYTES_IN_KEY, 0),
                    sent[1],
                    self.model_sha256(),
                    scope.get(ERROR_CODE_KEY),
                    scope.get(ACCESS_DETAIL_KEY),
                )

    async def _refuse(self, error: ServiceError, scope: Scope, receive: Receive, send: Send) -> None:
        scope[ERROR_CODE_KEY] = error.code
        if self.on_error is not None:
            self.on_error(error.code)
        await error_response(error)(scope, receive, send)

    def _authenticate(self, scope: Scope) -> tuple[Token | None, str | None, ServiceError | None]:
        """(token, Set-Cookie value to send, refusal): exactly one of token and refusal is set."""
        assert self.tokens is not None
        presented, via_query = _credential(scope)
        if presented is None:
            if self.tokens.empty:
                why = self.tokens.error or "no token is configured"
                return None, None, Unauthenticated(f"this service accepts no token yet: {why}")
            return (
                None,
                None,
                Unauthenticated(
                    "a token is required: send `Authorization: Bearer <token>` (or open a page once with "
                    "?access_token=<token>)"
                ),
            )
        token = self.tokens.match(presented)
        if token is None:
            return None, None, Unauthenticated("the token is not valid (unknown, or rotated out)", invalid_token=True)
        needed = required_scope(scope["method"], scope["path"])
        if needed not in token.scopes:
            return (
                token,
                None,
                Forbidden(
                    f"token {token.name!r} may not {needed} (its scopes: {', '.join(sorted(token.scopes))})",
                    scope=needed,
                ),
            )
        cookie = None
        if via_query:
            secure = "; Secure" if scope.get("scheme") == "https" else ""
            cookie = f"{TOKEN_COOKIE}={presented}; Path=/; HttpOnly; SameSite=Strict{secure}"
        return token, cookie, None


def _credential(scope: Scope) -> tuple[str | None, bool]:
    """The token a request presents and whether it came in the query string (see the module docstring)."""
    cookie_header: bytes | None = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, rest = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and rest.strip():
                return rest.strip(), False
        elif name == b"cookie":
            cookie_header = value
    if cookie_header is not None and TOKEN_COOKIE.encode() in cookie_header:
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(cookie_header.decode("latin-1"))
        except Exception:  # a malformed Cookie header is no credential
            jar = SimpleCookie()
        if (morsel := jar.get(TOKEN_COOKIE)) is not None and morsel.value:
            return morsel.value, False
    query: bytes = scope.get("query_string", b"")
    if b"access_token=" in query and scope["method"] in ("GET", "HEAD"):
        values = parse_qs(query.decode("latin-1")).get("access_token")
        if values and values[0]:
            return values[0], True
    return None, False


def install_http_guard(
    app: Any,
    settings: HttpSettings,
    *,
    model_sha256: Callable[[], str | None] = lambda: None,
    on_error: Callable[[str], None] | None = None,
    on_response: Callable[[str, int], None] | None = None,
) -> TokenStore | None:
    """Add the guard to `app` as its outermost middleware; returns the token store (None: no auth). Raises
    `auth.TokenFileError` when AUTH_TOKENS_FILE exists and does not parse (the service must not start).

    The access log (`app.state.access_log`, None when off) writes its last lines when the app shuts down."""
    tokens = TokenStore(settings.auth_tokens_file) if settings.auth_tokens_file is not None else None
    access = AccessLog() if settings.access_log else None
    app.state.access_log = access
    app.add_middleware(
        HttpGuard,
        settings=settings,
        tokens=tokens,
        access=access,
        model_sha256=model_sha256,
        on_error=on_error,
        on_response=on_response,
    )
    if access is not None:
        lifespan = app.router.lifespan_context

        @contextlib.asynccontextmanager
        async def writing_lifespan(app: Any) -> AsyncIterator[Any]:
            try:
                async with lifespan(app) as state:
                    yield state
            finally:
                access.close()

        app.router.lifespan_context = writing_lifespan
    return tokens
