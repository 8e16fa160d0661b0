"""Credentials out of everything a person or a collector reads: /health, /ready, /camera, /detections, the logs.

A camera source is often a URL with a password in it (`rtsp://user:pass@cam/stream`) or in its query
(`http://cam/video.mjpg?user=admin&pwd=...`), sometimes inside a GStreamer pipeline (`rtspsrc location=... user-pw=
...`). `redact_text` hides, in any text:

- the user information of every URL, up to its LAST `@` (so `rtsp://user:pa@ss@host` shows `rtsp://***@host`,
  not `ss@host`): a password may contain `@`, `/`, `?` unescaped, so everything before the last `@` goes, even at
  the price of hiding a harmless `@` in a path;
- every query value (`?user=***&pwd=***`: which parameter holds a secret differs per camera) and the fragment;
- `user-pw=`, `user-id=`, `password=`, `passwd=`, `pwd=`, `token=`, `secret=`, `key=` values outside URLs.

`SecretFilter` is the safety net under the logs: it replaces the given secret strings (the camera source as
configured, the MQTT password) wherever they would appear in a log record, tracebacks included. What native
libraries (FFmpeg, OpenCV) print to the standard error themselves never passes through Python's logging; they were
checked not to print a source URL when it fails to open.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

MASK = "***"
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")
_SECRET_PROPERTY = re.compile(
    r"\b(user-pw|user-id|password|passwd|pwd|token|secret|api[-_]?key|key)=(\"[^\"]*\"|'[^']*'|[^\s&!#]+)",
    re.IGNORECASE,
)


def redact_url(url: str) -> str:
    """`url` with its user information, query values and fragment hidden (see the module docstring)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    at = rest.rfind("@")
    userinfo = f"{MASK}@" if at >= 0 else ""
    rest = rest[at + 1 :] if at >= 0 else rest
    rest, hash_, _fragment = rest.partition("#")
    head, question, query = rest.partition("?")
    if question:
        pairs = []
        for pair in query.split("&"):
            key, eq, _value = pair.partition("=")
            pairs.append(f"{key}={MASK}" if eq else key)
        head += "?" + "&".join(pairs)
    return f"{scheme}://{userinfo}{head}{'#' + MASK if hash_ else ''}"


def redact_text(text: str) -> str:
    """`text` with every URL redacted and secret-looking `name=value` properties masked."""
    if "://" in text:
        text = _URL.sub(lambda m: redact_url(m.group(0)), text)
    if "=" in text:
        text = _SECRET_PROPERTY.sub(lambda m: f"{m.group(1)}={MASK}", text)
    return text


class SecretFilter(logging.Filter):
    """Replaces known secret strings in every record passing through the handler it is attached to.

    `sources` (camera sources) are replaced by their redacted form, and only when that differs (a file path or a
    device is no secret); `passwords` by ***.
    """

    def __init__(self, sources: Iterable[str] = (), passwords: Iterable[str] = ()) -> None:
        super().__init__()
        found = {s: redact_text(s) for s in sources if s and redact_text(s) != s}
        found.update({p: MASK for p in passwords if p and len(p) >= 3})
        self._secrets = sorted(found.items(), key=lambda item: -len(item[0]))  # a whole URL before a part of it

    @property
    def active(self) -> bool:
        return bool(self._secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        message = record.getMessage()
        cleaned = self._clean(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        if record.exc_info:
            record.exc_text = self._clean(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        for key, value in vars(record).items():
            if isinstance(value, str) and key not in ("msg", "exc_text") and any(s in value for s, _ in self._secrets):
                setattr(record, key, self._clean(value))
        return True

    def _clean(self, text: str) -> str:
        for secret, shown in self._secrets:
            if secret in text:
                text = text.replace(secret, shown)
        return text
