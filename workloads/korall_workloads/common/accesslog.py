"""The access log: one JSON line per request, on the `korall.access` logger, whatever LOG_JSON says.

    {"log":"access","time":"2025-06-01T12:00:00.123Z","client":"10.0.3.7","token":"ci","method":"POST",
     "path":"/infer","query":"score_th=0.4","status":200,"bytes_in":60212,"bytes_out":1042,"latency_ms":21.84,
     "model_sha256":"7046f31a...","error":null}

A route may add a detail object under ACCESS_DETAIL_KEY in the request's scope: /infer adds the image format and
size, the number of detections and its invoke and total ms (as `"infer": {...}`).

`token` is the token's name (null without auth, or when none matched); the token itself never appears: a token
sent as `access_token=` in the query is shown as `access_token=***`. `bytes_in` counts the body the service read,
`bytes_out` the reply's body; `latency_ms` runs from the request head to the reply's last byte handed to the
server; `error` is the error code of an error reply. `configure_logging` gives the logger its own handler, which
writes the line as is (the JSON formatter would wrap it in a second JSON document).
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any

ACCESS_LOGGER = "korall.access"
ACCESS_DETAIL_KEY = "korall.access_detail"
_TOKEN_IN_QUERY = re.compile(r"(^|&)(access_token=)[^&]*")


def redact_query(query: str) -> str:
    """The query string with the value of any `access_token` parameter hidden."""
    return _TOKEN_IN_QUERY.sub(r"\1\2***", query) if "access_token=" in query else query


class AccessLog:
    """Writes the access line of a request (see the module docstring)."""

    def __init__(self) -> None:
        self._log = logging.getLogger(ACCESS_LOGGER)

    @property
    def enabled(self) -> bool:
        return self._log.isEnabledFor(logging.INFO)

    def write(
        self,
        *,
        started: float,
        client: str,
        token: str | None,
        method: str,
        path: str,
        query: bytes,
        status: int,
        bytes_in: int,
        bytes_out: int,
        model_sha256: str | None,
        error: str | None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        if not self._log.isEnabledFor(logging.INFO):
            return
        now = time.time()
        line: dict[str, Any] = {
            "log": "access",
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z",
            "client": client,
            "token": token,
            "method": method,
            "path": path,
            "query": redact_query(query.decode("latin-1")) if query else None,
            "status": status,
            "bytes_in": bytes_in,
            "bytes_out": bytes_out,
            "latency_ms": round((time.perf_counter() - started) * 1000, 2),
            "model_sha256": model_sha256,
            "error": error,
        }
        if detail is not None:
            line["infer"] = detail
        self._log.info(json.dumps(line, separators=(",", ":")))


def install_access_handler(handler: logging.Handler) -> None:
    """Route the access lines to `handler` alone (standard output, by `configure_logging`), unformatted."""
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger(ACCESS_LOGGER)
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
