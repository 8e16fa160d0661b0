"""A real HTTP/1.1 object server on a loopback port that can misbehave on purpose, for the downloader tests.

It serves bytes or files with Content-Length and Range (206 + Content-Range; via sendfile for files, or paced
at a network link's rate) like a static file server or S3 does, records every request, and can be told to:
drop the connection after N body bytes, ignore Range (200 with the whole body), answer without a length
(chunked), redirect, or answer a status with a body (a 403 "Request has expired" in S3's XML, a 500).
Used by tests/workloads/fetch and bench/bench_fetch.py.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from s3_servers import reply_xml

_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


@dataclass
class Misbehaviour:
    """What the server does wrong, per object. Counters run down as the server uses them."""

    drop_after: int | None = None  # close the connection after sending this many body bytes ...
    drops: int = 1  # ... this many times
    ignore_range: bool = False  # answer 200 with the whole body even to a Range request
    chunked: bool = False  # no Content-Length: Transfer-Encoding chunked
    statuses: list[tuple[int, bytes]] = field(default_factory=list)  # answer these first, one per request
    redirect_to: str | None = None  # answer 302 with this Location instead
    hold_s: float = 0.0  # wait this long before the body (a slow store: keeps concurrent downloads overlapping)


@dataclass
class Seen:
    method: str
    path: str
    range: str | None
    headers: dict[str, str]


class ObjectServer:
    """`with ObjectServer() as srv: srv.put("/m", data); srv.url("/m")`; `srv.requests` lists what it saw."""

    def __init__(self, on_request: Callable[[Seen], None] | None = None, rate_bytes_s: float | None = None) -> None:
        self.on_request = on_request
        self.rate_bytes_s = rate_bytes_s  # pace every body at this rate (a network link), None: as fast as it goes
        self.objects: dict[str, bytes | Path] = {}
        self.misbehaviour: dict[str, Misbehaviour] = {}
        self.requests: list[Seen] = []
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                owner._serve(self)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> ObjectServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def put(self, path: str, body: bytes | Path, misbehaviour: Misbehaviour | None = None) -> str:
        self.objects[path] = body
        if misbehaviour is not None:
            self.misbehaviour[path] = misbehaviour
        return self.url(path)

    def gets(self, path: str) -> list[Seen]:
        return [r for r in self.requests if r.path.split("?")[0] == path]

    # ---------------------------------------------------------------------------------------------- serving

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        path = h.path.split("?")[0]
        with self._lock:
            self.requests.append(Seen(h.command, h.path, h.headers.get("Range"), dict(h.headers.items())))
            bad = self.misbehaviour.get(path, Misbehaviour())
            status = bad.statuses.pop(0) if bad.statuses else None
        if self.on_request is not None:
            self.on_request(self.requests[-1])
        if bad.redirect_to is not None:
            h.send_response(302)
            h.send_header("Location", bad.redirect_to)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return None
        if status is not None:
            return reply_xml(h, status[0], status[1])
        body = self.objects.get(path)
        if body is None:
            return reply_xml(
                h, 404, b"<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message></Error>"
            )
        size = body.stat().st_size if isinstance(body, Path) else len(body)
        start, end = 0, size - 1
        match = _RANGE.match(h.headers.get("Range") or "")
        partial = bool(match) and not bad.ignore_range
        if match and partial:
            start = int(match.group(1))
            end = min(int(match.group(2)), size - 1) if match.group(2) else size - 1
            if start >= size:
                h.send_response(416)
                h.send_header("Content-Range", f"bytes */{size}")
                h.send_header("Content-Length", "0")
                h.end_headers()
                return
        length = end - start + 1
        h.send_response(206 if partial else 200)
        h.send_header("Accept-Ranges", "bytes")
        h.send_header("Content-Type", "application/octet-stream")
        if partial:
            h.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        if bad.chunked:
            h.send_header("Transfer-Encoding", "chunked")
        else:
            h.send_header("Content-Length", str(length))
        h.end_headers()
        time.sleep(bad.hold_s)
        with self._lock:
            cut = bad.drop_after if bad.drop_after is not None and bad.drops > 0 else None
            if cut is not None:
                bad.drops -= 1
        if cut is not None:
            length = min(length, cut)
        if bad.chunked:
            self._send_chunked(h, body, start, length, cut is None)
        elif self.rate_bytes_s:
            self._send_paced(h, body, start, length)
        elif isinstance(body, Path):
            with body.open("rb") as f:
                h.connection.sendfile(f, start, length)
        else:
            h.wfile.write(body[start : start + length])
        if cut is not None:  # drop the connection mid-body, as a broken network or a killed proxy does
            h.wfile.flush()
            h.connection.shutdown(socket.SHUT_RDWR)
            h.close_connection = True

    def _send_paced(self, h: BaseHTTPRequestHandler, body: bytes | Path, start: int, length: int) -> None:
        """Send at `rate_bytes_s` (a network link's speed), in 64 KiB pieces, sleeping to keep the pace."""
        data = memoryview(body.read_bytes() if isinstance(body, Path) else body)[start : start + length]
        began = time.monotonic()
        for i in range(0, len(data), 1 << 16):
            ahead = began + i / (self.rate_bytes_s or 1) - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
            h.wfile.write(data[i : i + (1 << 16)])

    @staticmethod
    def _send_chunked(h: BaseHTTPRequestHandler, body: bytes | Path, start: int, length: int, finish: bool) -> None:
        data = body.read_bytes() if isinstance(body, Path) else body
        view = memoryview(data)[start : start + length]
        for i in range(0, len(view), 1 << 16):
            piece = view[i : i + (1 << 16)]
            h.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        if finish:
            h.wfile.write(b"0\r\n\r\n")
