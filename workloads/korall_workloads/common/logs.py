"""Logging for the workload services: plain lines for people, one JSON object per line for collectors."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from korall_workloads.common.accesslog import install_access_handler
from korall_workloads.common.redact import SecretFilter

_STANDARD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record; `extra={...}` fields become top-level keys."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:  # already formatted (and cleaned of secrets: redact.SecretFilter)
            out["exc"] = record.exc_text
        return json.dumps(out, default=str)


def configure_logging(level: str = "INFO", json_lines: bool = False) -> None:
    """Configure the root logger once, for the service and for uvicorn's own loggers; the access log (always JSON,
    one line per request) goes to standard output, everything else to standard error."""
    handler = logging.StreamHandler(sys.stderr)
    if json_lines:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    install_access_handler(logging.StreamHandler(sys.stdout))
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # python-multipart warns once per malformed body: the client's error, which its 400 and access line already
    # say; one more log line per bad request would let anyone fill the log.
    logging.getLogger("python_multipart").setLevel(logging.ERROR)


def redact_in_logs(sources: list[str | None] | None = None, passwords: list[str | None] | None = None) -> None:
    """Hide these camera sources (redacted) and passwords (***) in every log line from now on (redact.SecretFilter)."""
    secret_filter = SecretFilter([s for s in sources or () if s], [p for p in passwords or () if p])
    if not secret_filter.active:
        return
    for handler in logging.getLogger().handlers:
        handler.addFilter(secret_filter)
