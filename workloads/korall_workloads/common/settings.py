"""What every workload service's configuration shares: listen address, logging, and one-line start failures.

Each service subclasses `ServiceSettings` (adding its own fields and its port default) so that HOST, LOG_JSON
and LOG_LEVEL mean the same everywhere, and `describe_validation_error` turns pydantic's report into the one
line a person reads when a variable is wrong. A field that a CRD sets is declared with `from_contract`, so the
workload accepts exactly what the API server admits.
"""

from __future__ import annotations

import sys
from typing import Any, Literal, TypeVar

from korall_contract import ServiceEnv, Setting
from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from korall_workloads.common.redact import redact_text

S = TypeVar("S", bound=BaseSettings)


def from_contract(setting: Setting, **overrides: Any) -> Any:
    """The pydantic field of a variable the contract describes: its name, default, bounds and description, as the
    CRD and the operator have them (choices come from the field's type: the contract's Literal for it)."""
    kwargs: dict[str, Any] = {
        "default": setting.default,
        "validation_alias": str(setting),
        "description": setting.description,
    }
    if setting.minimum is not None:
        kwargs["ge"] = setting.minimum
    if setting.maximum is not None:
        kwargs["le"] = setting.maximum
    return Field(**{**kwargs, **overrides})


class ServiceSettings(BaseSettings):
    """Base for a service's settings: fields read from the environment names given as validation aliases."""

    model_config = SettingsConfigDict(populate_by_name=True, extra="ignore", validate_default=True)

    host: str = Field(
        default="127.0.0.1", min_length=1, validation_alias=ServiceEnv.HOST, description="Listen address."
    )
    log_json: bool = Field(
        default=False, validation_alias=ServiceEnv.LOG_JSON, description="One JSON object per log line."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", validation_alias=ServiceEnv.LOG_LEVEL, description="Log level."
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value


def describe_validation_error(exc: ValidationError, settings_class: type[BaseSettings]) -> str:
    """One line naming each bad variable, its value and what is wrong, for the start-up failure message."""
    aliases = {name: field.validation_alias for name, field in settings_class.model_fields.items()}
    parts = []
    for err in exc.errors():
        loc = err.get("loc", ())
        key = str(loc[0]) if loc else ""
        env = aliases.get(key) or key
        value = err.get("input")
        shown = (
            f"={redact_text(value)!r}"
            if isinstance(value, str)
            else f"={value!r}"
            if isinstance(value, int | float)
            else ""
        )
        message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{env}{shown}: {message}" if env else message)
    return "; ".join(parts)


def load_or_exit(settings_class: type[S], service: str) -> S:
    """Read `settings_class` from the environment; a bad value prints one line and exits 2, no traceback."""
    try:
        return settings_class()
    except ValidationError as exc:
        print(
            f"korall {service}: invalid configuration: {describe_validation_error(exc, settings_class)}",
            file=sys.stderr,
        )
        raise SystemExit(2) from None
