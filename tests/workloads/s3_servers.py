"""Real S3 over HTTP for the model delivery tests: moto's server, and a thin front that enforces link expiry.

`moto_s3()` runs moto's S3 API (ThreadedMotoServer) on a free loopback port: boto3 talks to it as to any
S3-compatible store, and it serves presigned GETs (with Range) like S3. It does not check a presigned link's
expiry, though: it serves an expired link forever. `ExpiringLinkFront` is the thinnest honest stand-in for
that one check: an HTTP proxy in front of moto that refuses a SigV4 query link once X-Amz-Date + X-Amz-Expires
has passed, with S3's own answer (403, <Code>AccessDenied</Code><Message>Request has expired</Message>), and
passes everything else through to moto unchanged. It checks nothing else (moto does not verify signatures).
With `down` set it plays a store that does not answer for a while: every request gets S3's 503 ServiceUnavailable.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.client
import logging
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from moto.server import ThreadedMotoServer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def moto_s3() -> Iterator[str]:
    """A moto S3 server on loopback for the block; yields its endpoint URL. Its state is per process."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def reply_xml(h: BaseHTTPRequestHandler, status: int, body: bytes) -> None:
    """An S3-style XML answer of the test servers (no body to a HEAD, as HTTP wants)."""
    h.send_response(status)
    h.send_header("Content-Type", "application/xml")
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    if h.command != "HEAD":
        h.wfile.write(body)


def _expired_body(expires: int, expired_at: dt.datetime, now: dt.datetime) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
        f"<Message>Request has expired</Message><X-Amz-Expires>{expires}</X-Amz-Expires>"
        f"<Expires>{expired_at:%Y-%m-%dT%H:%M:%SZ}</Expires><ServerTime>{now:%Y-%m-%dT%H:%M:%SZ}</ServerTime>"
        "</Error>"
    ).encode()


class ExpiringLinkFront:
    """`with ExpiringLinkFront(moto) as front:` sign links for `front.endpoint`; `front.refused` counts 403s."""

    def __init__(self, upstream: str) -> None:
        self.upstream = urlsplit(upstream)
        self.refused = 0
        self.forwarded = 0
        self.down = False
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                owner._handle(self)

            def do_HEAD(self) -> None:
                owner._handle(self)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def __enter__(self) -> ExpiringLinkFront:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        if self.down:
            reply_xml(h, 503, b"<Error><Code>ServiceUnavailable</Code><Message>Try again.</Message></Error>")
            return
        query = parse_qs(urlsplit(h.path).query)
        if "X-Amz-Date" in query and "X-Amz-Expires" in query:
            signed = dt.datetime.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
            expires = int(query["X-Amz-Expires"][0])
            now = dt.datetime.now(dt.UTC)
            if now > signed + dt.timedelta(seconds=expires):
                self.refused += 1
                reply_xml(h, 403, _expired_body(expires, signed + dt.timedelta(seconds=expires), now))
                return
        self.forwarded += 1
        self._forward(h)

    def _forward(self, h: BaseHTTPRequestHandler) -> None:
        conn = http.client.HTTPConnection(self.upstream.hostname or "127.0.0.1", self.upstream.port, timeout=30)
        try:
            headers = {k: v for k, v in h.headers.items() if k.lower() in ("range", "authorization", "host")}
            conn.request(h.command, h.path, headers=headers)
            resp = conn.getresponse()
            h.send_response(resp.status)
            for name, value in resp.getheaders():
                if name.lower() not in ("connection", "transfer-encoding", "server", "date"):
                    h.send_header(name, value)
            if resp.getheader("Content-Length") is None:  # a body without length ends with the connection
                h.send_header("Connection", "close")
                h.close_connection = True
            h.end_headers()
            while h.command != "HEAD" and (block := resp.read(1 << 16)):
                h.wfile.write(block)
        finally:
            conn.close()
