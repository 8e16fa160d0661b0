"""The HTTP side of both services, configured in one place: what one client may hold, tokens, rate limits, access log.

Read from the names of `korall_contract.HttpEnv` (the operator sets AUTH_TOKENS_FILE and AUTH_METRICS) and validated
at start like every other setting: a rate limit `limits` cannot parse stops the service with one line. What each
setting protects against, and what the HTTP server refuses before the app sees a request: docs/security.md.
"""

from __future__ import annotations

from pathlib import Path

from korall_contract import HttpEnv
from limits import RateLimitItem, parse_many
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class HttpSettings(BaseSettings):
    """Limits per client and connection, auth and rate limits of one service (environment: `HttpEnv`)."""

    model_config = SettingsConfigDict(populate_by_name=True, extra="ignore", validate_default=True, frozen=True)

    max_connections: int = Field(
        default=128,
        ge=1,
        le=100_000,
        validation_alias=HttpEnv.MAX_CONNECTIONS,
        description="Open connections at once; one more is answered 503 `too_many_connections` and closed.",
    )
    max_header_bytes: int = Field(
        default=16 * 1024,
        ge=1024,
        le=1024 * 1024,
        validation_alias=HttpEnv.MAX_HEADER_BYTES,
        description="Request line and headers together; larger: 431 `header_too_large`, connection closed.",
    )
    header_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=600,
        validation_alias=HttpEnv.HEADER_TIMEOUT_S,
        description="A new connection's first request head, and any request head once begun, must arrive within "
        "this; else 408 `request_timeout`, connection closed.",
    )
    body_timeout_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        validation_alias=HttpEnv.BODY_TIMEOUT_S,
        description="An upload's body must arrive within this; else 408 `request_timeout`, connection closed.",
    )
    send_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=600,
        validation_alias=HttpEnv.SEND_TIMEOUT_S,
        description="A client whose reply (or live stream) stays unread this long while the server's buffers are "
        "full is disconnected.",
    )
    keepalive_s: float = Field(
        default=5.0,
        gt=0,
        le=600,
        validation_alias=HttpEnv.KEEPALIVE_S,
        description="An idle keep-alive connection is closed after this long.",
    )
    streams_per_client: int = Field(
        default=4,
        ge=1,
        le=1000,
        validation_alias=HttpEnv.STREAMS_PER_CLIENT,
        description="Live streams (Server-Sent Events) one client address may hold at once; one more: 503 "
        "`too_many_clients`.",
    )
    access_log: bool = Field(
        default=True, validation_alias=HttpEnv.ACCESS_LOG, description="One JSON line per request (korall.access)."
    )
    auth_tokens_file: Path | None = Field(
        default=None,
        validation_alias=HttpEnv.AUTH_TOKENS_FILE,
        description="`name sha256:<hex> [scopes]` lines (the token Secret, mounted). Unset: no auth. Set but "
        "missing or empty: every protected route answers 401 (fail closed).",
    )
    auth_metrics: bool = Field(
        default=False,
        validation_alias=HttpEnv.AUTH_METRICS,
        description="true: /metrics needs a token with the `metrics` scope; false: open like /health.",
    )
    rate_limit_per_client: str = Field(
        default="100/second",
        validation_alias=HttpEnv.RATE_LIMIT_PER_CLIENT,
        description="Requests per client address, in `limits` notation (`100/second;3000/minute`); empty: none. "
        "/health and /ready are exempt.",
    )
    rate_limit_per_token: str = Field(
        default="100/second",
        validation_alias=HttpEnv.RATE_LIMIT_PER_TOKEN,
        description="Requests per token name, same notation; empty: none.",
    )

    @field_validator("rate_limit_per_client", "rate_limit_per_token")
    @classmethod
    def _parses(cls, value: str) -> str:
        value = value.strip()
        if value:
            try:
                parse_many(value)
            except ValueError as exc:
                raise ValueError(f"not a rate limit such as 100/second;3000/minute ({exc})") from None
        return value

    @field_validator("auth_tokens_file", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @classmethod
    def without_rate_limits(cls) -> HttpSettings:
        """The defaults without rate limits (and without auth): what an app built in a test or a bench gets unless
        it says otherwise. A service started by `python -m` reads its environment instead."""
        return cls.model_construct(rate_limit_per_client="", rate_limit_per_token="")

    def limits_per_client(self) -> list[RateLimitItem]:
        return parse_many(self.rate_limit_per_client) if self.rate_limit_per_client else []

    def limits_per_token(self) -> list[RateLimitItem]:
        return parse_many(self.rate_limit_per_token) if self.rate_limit_per_token else []
