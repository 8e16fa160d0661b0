"""The access log: one JSON line per request, on the `korall.access` logger, whatever LOG_JSON says.

    {"log":"access","time":"2025-06-01T12:00:00.123Z","client":"10.0.3.7","token":"ci","method":"POST",
     "path":"/infer","query":"score_th=0.4","status":200,"bytes_in":60212,"bytes_out":1042,"latency_ms":21.84,
     "model_sha256":"7046f31a...","error":null}

A route may add a detail object under ACCESS_DETAIL_KEY in the request's scope: /infer adds the image format and
size, the number of detections and its invoke and total ms (as `"infer": {...}`); a route that reads a body says how
many bytes under BYTES_IN_KEY (else the request's Content-Length counts).

`token` is the token's name (null without auth, or when none matched); the token itself never appears: a token
sent as `access_token=` in the query is shown as `access_token=***`. `bytes_in` counts the body the service read,
`bytes_out` the reply's body; `latency_ms` runs from the request head to the reply's last byte handed to the
server; `error` is the error code of an error reply. `configure_logging` gives the logger its own handler, which
writes the line as is (the JSON formatter would wrap it in a second JSON document).

Off the request's path: the event loop only keeps each request's fields (a deque append, under a microsecond); a
thread of its own turns them into JSON and writes them, every FLUSH_EVERY_S, and at shutdown (`close`). Formatting
and logging a line cost about 40 us of the event loop's time, measured alone; that time is the loop's capacity under
load (at concurrency 1, paired measurements on the shared development machine could not tell the two apart).
"""

from __future__ import annotations

import collections
import json
import logging
import re
import threading
import time
from typing import Any

ACCESS_LOGGER = "korall.access"
ACCESS_DETAIL_KEY = "korall.access_detail"
BYTES_IN_KEY = "korall.bytes_in"
FLUSH_EVERY_S = 0.1
MAX_PENDING = 10_000
"""Lines waiting for the writer at most; past it (the log's consumer stalls standard output) lines are counted as
dropped, and the count is logged, rather than held without bound."""

_TOKEN_IN_QUERY = re.compile(r"(^|&)(access_token=)[^&]*")
_FIELDS = (
    "client",
    "token",
    "method",
    "path",
    "query",
    "status",
    "bytes_in",
    "bytes_out",
    "latency_ms",
)


def redact_query(query: str) -> str:
    """The query string with the value of any `access_token` parameter hidden."""
    return _TOKEN_IN_QUERY.sub(r"\1\2***", query) if "access_token=" in query else query


class AccessLog:
    """Keeps each request's fields and writes them as access lines from a thread of its own (module docstring)."""

    def __init__(self) -> None:
        self._log = logging.getLogger(ACCESS_LOGGER)
        self._pending: collections.deque[tuple[Any, ...]] = collections.deque()
        self._dropped = 0
        self._flush_lock = threading.Lock()
        self._stop = threading.Event()
        self._writer: threading.Thread | None = None

    def record(
        self,
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
        detail: dict[str, Any] | None,
    ) -> None:
        """On the event loop, once the reply is out: keep this request's fields for the writer."""
        if not self._log.isEnabledFor(logging.INFO):
            return
        if len(self._pending) >= MAX_PENDING:
            self._dropped += 1
            return
        latency_ms = (time.perf_counter() - started) * 1000
        item = (time.time(), client, token, method, path, query, status, bytes_in, bytes_out, latency_ms)
        self._pending.append((*item, model_sha256, error, detail))
        if self._writer is None:
            self._writer = threading.Thread(target=self._run, name="access-log", daemon=True)
            self._writer.start()

    def flush(self) -> None:
        """Write every line kept so far (the writer thread does, every FLUSH_EVERY_S; tests and shutdown too)."""
        with self._flush_lock:
            while self._pending:
                self._log.info(json.dumps(_line(self._pending.popleft()), separators=(",", ":")))
            if self._dropped:
                dropped, self._dropped = self._dropped, 0
                self._log.warning(json.dumps({"log": "access", "dropped": dropped, "reason": "the log fell behind"}))

    def close(self) -> None:
        """Write what is left and stop the writer (at the app's shutdown)."""
        self._stop.set()
        self.flush()

    def _run(self) -> None:
        while not self._stop.wait(FLUSH_EVERY_S):
            self.flush()


def _line(item: tuple[Any, ...]) -> dict[str, Any]:
    now, *values, model_sha256, error, detail = item
    line: dict[str, Any] = {"log": "access", "time": _iso(now)}
    line.update(zip(_FIELDS, values, strict=True))
    line["query"] = redact_query(line["query"].decode("latin-1")) if line["query"] else None
    line["latency_ms"] = round(line["latency_ms"], 2)
    line["model_sha256"] = model_sha256
    line["error"] = error
    if detail is not None:
        line["infer"] = detail
    return line


def _iso(now: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


def install_access_handler(handler: logging.Handler) -> None:
    """Route the access lines to `handler` alone (standard output, by `configure_logging`), unformatted."""
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger(ACCESS_LOGGER)
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
