"""The broker URL and the topic prefix of event delivery: one rule for the CRD, the operator and the workloads.

The CRD says it with the Settings' patterns (`EventsEnv.MQTT_URL`, `EventsEnv.TOPIC_PREFIX`, written into the
schema by `python -m korall_tools.crds`), so the API server refuses a bad value at admission. The operator's spec
model and the workloads' `EventsSettings` call the functions here, which accept exactly what those patterns match
(tests/test_contract.py holds them to it) and say in words what is wrong. A value the CRD admitted but the workload
refused would crash-loop every pod of its Deployment.

- a broker: `mqtt://host[:port]` or `mqtts://host[:port]` (TLS), a host name or IPv4 address, a port from 1 to
  65535 (default 1883, or 8883 with TLS); no credentials, path, query or fragment;
- a topic prefix: one or more `/`-separated levels, none empty (`a//b`, `a/`, `/a` are not), none holding the
  wildcards `+` or `#`, a space or a control character.

Standard library only: this package ships in all three images.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}

# Written for both regular-expression engines that read them: Go's RE2 (the API server) and Python's re. Explicit
# classes only (`\s` differs between the two).
_HOST = r"[A-Za-z0-9]([-A-Za-z0-9._]*[A-Za-z0-9])?"
_PORT = r"(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})"  # 1..65535
_LEVEL = r"[^/+#\x00-\x20\x7f]+"

BROKER_URL_PATTERN = rf"^mqtts?://{_HOST}(:{_PORT})?/?$"
TOPIC_PREFIX_PATTERN = rf"^{_LEVEL}(/{_LEVEL})*$"

__all__ = [
    "BROKER_URL_PATTERN",
    "DEFAULT_PORTS",
    "TOPIC_PREFIX_PATTERN",
    "BrokerAddress",
    "check_topic_level",
    "check_topic_prefix",
    "parse_broker_url",
]


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool

    def __str__(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def parse_broker_url(url: str) -> BrokerAddress:
    """`mqtt://host[:port]` or `mqtts://host[:port]`; raises ValueError with a message a person can act on."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in DEFAULT_PORTS:
        raise ValueError(f"scheme must be mqtt:// or mqtts:// (TLS), got {scheme if sep else 'none'!r}")
    if "@" in rest:
        raise ValueError("no credentials in the URL: use EVENTS_MQTT_USERNAME and EVENTS_MQTT_PASSWORD (a Secret)")
    netloc, _, path = rest.partition("/")
    if path or "?" in rest or "#" in rest:
        raise ValueError("no path, query or fragment: the topics come from the topic prefix")
    host, colon, port = netloc.partition(":")
    if colon and not re.fullmatch(_PORT, port):
        raise ValueError(f"the port must be a number from 1 to 65535 (no leading zero), got {port!r}")
    if not host:
        raise ValueError("no host name")
    if not re.fullmatch(_HOST, host):
        raise ValueError(f"the host must be a host name or an IPv4 address (letters, digits, '.', '-', '_'): {host!r}")
    if not re.fullmatch(BROKER_URL_PATTERN, url):  # the checks above are the pattern's, part by part: never here
        raise ValueError(f"not mqtt://host[:port] or mqtts://host[:port]: {url!r}")
    return BrokerAddress(host.lower(), int(port) if port else DEFAULT_PORTS[scheme], scheme == "mqtts")


def check_topic_level(value: str, what: str) -> str:
    """One level of an MQTT topic: not empty, no '/', no wildcard ('+', '#'), no space or control character."""
    if not re.fullmatch(_LEVEL, value):
        raise ValueError(
            f"{what} must be a non-empty MQTT topic level without '/', '+', '#', spaces or control characters: "
            f"{value!r}"
        )
    return value


def check_topic_prefix(value: str) -> str:
    """`a` or `a/b/c`: levels as `check_topic_level` wants them (so no leading, trailing or doubled '/')."""
    for level in value.split("/"):
        check_topic_level(level, f"each level of the topic prefix {value!r}")
    return value
