"""Event delivery configuration: the one place that reads the EVENTS_* environment, for both services.

Every range and default of event delivery lives in this class (names from `korall_contract.EventsEnv`). No
EVENTS_MQTT_URL means no delivery at all: no spool is opened, no connection is tried, the services behave as
before. A malformed value stops the service at start with one line naming the variable, like every other
setting; a well-formed broker that cannot be reached or refuses the credentials is a runtime state instead
(reported in /health, retried, events kept in the spool). What a broker URL and a topic prefix may be is the
contract's rule (`korall_contract.mqtt`), the same the CRD's patterns and the operator hold to.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Literal

from korall_contract import (
    SPOOL_DIR_IN_POD,
    BrokerAddress,
    EventsEnv,
    QoS,
    check_topic_level,
    check_topic_prefix,
    parse_broker_url,
)
from pydantic import Field, FilePath, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from korall_workloads.common.settings import from_contract

__all__ = ["BrokerAddress", "EventsSettings", "parse_broker_url"]


class EventsSettings(BaseSettings):
    """Where events go, how long they may wait, and who they say they come from."""

    model_config = SettingsConfigDict(populate_by_name=True, extra="ignore", validate_default=True, frozen=True)

    # -- the broker ----------------------------------------------------------------------------------------------
    mqtt_url: str | None = from_contract(EventsEnv.MQTT_URL)
    mqtt_username: str | None = Field(default=None, validation_alias=EventsEnv.MQTT_USERNAME)
    mqtt_password: SecretStr | None = Field(default=None, validation_alias=EventsEnv.MQTT_PASSWORD)
    mqtt_tls_ca_file: FilePath | None = Field(
        default=None,
        validation_alias=EventsEnv.MQTT_TLS_CA_FILE,
        description="PEM bundle of the CA that signed the broker's certificate; unset: the system's CAs.",
    )
    mqtt_tls_cert_file: FilePath | None = Field(default=None, validation_alias=EventsEnv.MQTT_TLS_CERT_FILE)
    mqtt_tls_key_file: FilePath | None = Field(default=None, validation_alias=EventsEnv.MQTT_TLS_KEY_FILE)
    mqtt_tls_insecure: bool = Field(
        default=False,
        validation_alias=EventsEnv.MQTT_TLS_INSECURE,
        description="Do not check the broker's host name against its certificate (the chain is still checked).",
    )
    mqtt_version: Literal["5", "3.1.1"] = Field(default="5", validation_alias=EventsEnv.MQTT_VERSION)
    qos: QoS = from_contract(EventsEnv.QOS)
    topic_prefix: str = from_contract(EventsEnv.TOPIC_PREFIX)
    keepalive_s: int = Field(
        default=30,
        ge=5,
        le=3600,
        validation_alias=EventsEnv.KEEPALIVE_S,
        description="MQTT keep-alive; the broker publishes the last will ('offline') about 1.5 times this after "
        "the link dies silently.",
    )
    heartbeat_s: float = Field(default=30.0, ge=1.0, le=3600.0, validation_alias=EventsEnv.HEARTBEAT_S)
    reconnect_min_s: float = Field(default=0.5, ge=0.1, le=600.0, validation_alias=EventsEnv.RECONNECT_MIN_S)
    reconnect_max_s: float = Field(default=30.0, ge=0.1, le=3600.0, validation_alias=EventsEnv.RECONNECT_MAX_S)
    max_inflight: int = Field(
        default=64,
        ge=1,
        le=1000,
        validation_alias=EventsEnv.MAX_INFLIGHT,
        description="Events published and not yet acknowledged at once (also bounded by the broker's Receive "
        "Maximum): the pipeline depth that sets the drain rate after an outage.",
    )

    # -- the spool -----------------------------------------------------------------------------------------------
    spool_dir: Path = Field(
        default=Path(SPOOL_DIR_IN_POD),
        validation_alias=EventsEnv.SPOOL_DIR,
        description="Folder of the SQLite spool (outbox.sqlite3); created if missing. A hostPath keeps events "
        "across pod restarts on the node; an emptyDir only across container restarts.",
    )
    spool_max_events: int = Field(default=100_000, ge=10, le=10_000_000, validation_alias=EventsEnv.SPOOL_MAX_EVENTS)
    spool_max_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=64 * 1024,
        le=64 * 1024**3,
        validation_alias=EventsEnv.SPOOL_MAX_BYTES,
        description="Most payload bytes waiting; past it (or past EVENTS_SPOOL_MAX_EVENTS) the oldest are evicted.",
    )
    spool_max_age_s: float = Field(
        default=7 * 24 * 3600.0,
        ge=1.0,
        le=365 * 24 * 3600.0,
        validation_alias=EventsEnv.SPOOL_MAX_AGE_S,
        description="Unsent events older than this are evicted.",
    )

    # -- who the events come from ---------------------------------------------------------------------------------
    source_namespace: str = Field(default="default", validation_alias=EventsEnv.SOURCE_NAMESPACE)
    source_name: str | None = Field(
        default=None, validation_alias=EventsEnv.SOURCE_NAME, description="Unset: the service ('vision', 'audio')."
    )
    source_node: str = Field(default_factory=socket.gethostname, validation_alias=EventsEnv.SOURCE_NODE)

    # -- vision object events --------------------------------------------------------------------------------------
    object_end_after_s: float = Field(
        default=5.0,
        ge=0.1,
        le=3600.0,
        validation_alias=EventsEnv.OBJECT_END_AFTER_S,
        description="A label not detected for this long (in frame time) ends its object event.",
    )
    object_update_interval_s: float = Field(
        default=2.0,
        ge=0.0,
        le=3600.0,
        validation_alias=EventsEnv.OBJECT_UPDATE_INTERVAL_S,
        description="At most one update per object this often, sent when its best score improved; 0: every time.",
    )
    object_labels: str = Field(
        default="",
        validation_alias=EventsEnv.OBJECT_LABELS,
        description="Comma-separated labels that make events (e.g. person,car); empty: every label.",
    )

    @field_validator("mqtt_url", "mqtt_username", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        return value.strip() if isinstance(value, str) else value

    @field_validator("mqtt_url")
    @classmethod
    def _valid_url(cls, value: str | None) -> str | None:
        if value is not None:
            parse_broker_url(value)  # the contract's rule: the CRD's pattern says the same
        return value

    @field_validator("qos", mode="before")
    @classmethod
    def _qos_number(cls, value: object) -> object:
        return int(value) if isinstance(value, str) and value.strip().isdigit() else value

    @field_validator("topic_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        return check_topic_prefix(value)  # the contract's rule: the CRD's pattern says the same

    @field_validator("source_namespace", "source_name", "source_node")
    @classmethod
    def _source_part(cls, value: str | None) -> str | None:
        return None if value is None else check_topic_level(value, "a source namespace, name or node")

    @model_validator(mode="after")
    def _consistent(self) -> EventsSettings:
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError(
                f"{EventsEnv.RECONNECT_MAX_S} ({self.reconnect_max_s}) must be >= "
                f"{EventsEnv.RECONNECT_MIN_S} ({self.reconnect_min_s})"
            )
        if (self.mqtt_tls_cert_file is None) != (self.mqtt_tls_key_file is None):
            raise ValueError(f"set both {EventsEnv.MQTT_TLS_CERT_FILE} and {EventsEnv.MQTT_TLS_KEY_FILE}, or neither")
        tls_files = (self.mqtt_tls_ca_file, self.mqtt_tls_cert_file)
        if self.mqtt_url is not None and not self.broker.tls and any(f is not None for f in tls_files):
            raise ValueError(f"TLS files are set but {EventsEnv.MQTT_URL} is not mqtts://")
        if self.mqtt_password is not None and self.mqtt_username is None:
            raise ValueError(f"{EventsEnv.MQTT_PASSWORD} is set without {EventsEnv.MQTT_USERNAME}")
        return self

    @property
    def enabled(self) -> bool:
        return self.mqtt_url is not None

    @property
    def broker(self) -> BrokerAddress:
        if self.mqtt_url is None:
            raise ValueError("event delivery is disabled (no EVENTS_MQTT_URL)")
        return parse_broker_url(self.mqtt_url)

    @property
    def labels(self) -> frozenset[str]:
        """The labels that make object events; empty means all."""
        return frozenset(label.strip() for label in self.object_labels.split(",") if label.strip())

    def delay(self, failures: int) -> float:
        """Reconnect backoff: min, 2*min, 4*min ... capped at max (failures counts from 1)."""
        return float(min(self.reconnect_max_s, self.reconnect_min_s * 2 ** min(max(0, failures - 1), 1000)))
