"""The HTTP server both services run: uvicorn (uvloop + httptools) with limits on what one client may hold.

uvicorn alone has no header read timeout (a client that connects and sends nothing, or half a request line, holds
its connection for ever), no limit on the request head with httptools (a 128 MB header is parsed for seconds on
the event loop, stalling /health), no send timeout (a client that never reads a live stream blocks its response
for ever), and it answers a malformed request, or one over `limit_concurrency`, in plain text. `GuardedProtocol`
is uvicorn's own httptools protocol with those four things added, each answered with the services' JSON error
document from the one error map (`responses.raw_error_response`) and the connection closed:

- more than HTTP_MAX_CONNECTIONS open connections: the new one gets 503 `too_many_connections`, before any read;
- a request head (request line and headers) over HTTP_MAX_HEADER_BYTES: 431 `header_too_large`;
- a new connection's first request head, or any head once begun, not complete within HTTP_HEADER_TIMEOUT_S:
  408 `request_timeout` (idle keep-alive connections are uvicorn's: closed after HTTP_KEEPALIVE_S);
- what httptools cannot parse (bad Content-Length, bad characters, both Content-Length and chunked): 400
  `bad_request`, with the parser's reason;
- a reply the client leaves unread for HTTP_SEND_TIMEOUT_S once the server's buffers are full: the connection is
  dropped (aborted: a close would wait for the unread data to drain), and the route's stream ends with it. The
  kernel's send buffer is capped (SEND_BUFFER_BYTES), so that "full" comes after a bounded amount of data.

A refusal is written, then the connection lingers half-closed for up to LINGER_S (and LINGER_BYTES), reading and
dropping what the client still sends, as nginx's lingering close does: closing a socket with unread input makes the
kernel send a reset, which can destroy the reply before the client reads it. The same happens after any reply sent
before its request's body was read to its end (a 401, 413 or 503 to an upload), for up to HTTP_BODY_TIMEOUT_S: the
rest of the body is not worth parsing, and keeping the connection would mean parsing it; such a reply says
`Connection: close`, so that a keep-alive client does not send its next request on it. A refusal of a pipelined
request waits for the replies to the requests before it (HTTP/1.1 answers in order), and its input is dropped
meanwhile: the parser cannot go on past what it refused.

An `Upgrade` request (a client offering `h2c`, or a WebSocket handshake: neither is served) is served as plain
HTTP/1.1, as RFC 9110 lets a server do. httptools hands everything after such a head over as the new protocol's
bytes; its body (Content-Length) is fed to the route here instead, and what follows it is parsed as the next
request: otherwise the body would be run as a request of its own (request smuggling). A chunked body with
`Upgrade` is refused (400). A client that half-closes its side after its request (`nc -N`, `shutdown(SHUT_WR)`)
still gets its reply; the connection closes once the replies to what it sent are out.

The body has its own deadline where it is read (`vision.upload`, HTTP_BODY_TIMEOUT_S). Nothing here runs per byte:
the head is counted per received chunk, and two timer handles per request are all it costs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from typing import Any, ClassVar

import httptools
import uvicorn
from uvicorn._types import ASGI3Application, ASGISendEvent
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from korall_workloads.common.errors import HeadTooLarge, MalformedRequest, Overloaded, RequestTimeout, ServiceError
from korall_workloads.common.http_settings import HttpSettings
from korall_workloads.common.responses import raw_error_response

log = logging.getLogger("korall.server")

SEND_BUFFER_BYTES = 32 * 1024
"""The kernel's send buffer of each connection (it doubles it), and the transport's buffer above it: without a cap
the kernel's grows to megabytes, which a client that reads nothing fills only after minutes of a low-rate live
stream, holding its place that long. 64 KiB in flight still carry a snapshot at LAN round trips (64 MB/s at 1 ms)."""

LINGER_S = 2.0
"""How long a refused connection is kept half-closed, input dropped, so that the client can read the refusal."""

LINGER_BYTES = 32 * 1024 * 1024
"""How much input a lingering connection may still send before it is closed at once: above the largest upload
(MAX_UPLOAD_BYTES, 20 MiB by default), so that an upload refused before it was read (401, 413, 503) is drained and
its client reads the refusal, while a flood is not drained for ever. Dropping costs far less than parsing."""


class TooManyConnections(Overloaded):
    """Every connection the server allows is open; the client should retry in a moment."""

    code = "too_many_connections"


class _HeadTooLarge(Exception):
    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


class _Throttled:
    """At most one log line per kind of refusal per `every_s`, with the number of refusals since the last one: an
    attacker must not be able to flood the log with them."""

    def __init__(self, every_s: float = 10.0) -> None:
        self.every_s = every_s
        self._last: dict[str, float] = {}
        self._count: dict[str, int] = {}

    def warning(self, kind: str, message: str, *args: object) -> None:
        self._count[kind] = self._count.get(kind, 0) + 1
        now = time.monotonic()
        if now - self._last.get(kind, -self.every_s) >= self.every_s:
            count, self._count[kind] = self._count[kind], 0
            self._last[kind] = now
            log.warning(message + " (%d such in the last %g s)", *args, count, self.every_s)


_refusals = _Throttled()


class _SendTimeoutFlow(FlowControl):
    """uvicorn's flow control, whose wait for a full write buffer to drain gives up after `timeout_s`."""

    def __init__(self, transport: asyncio.Transport, timeout_s: float, protocol: GuardedProtocol) -> None:
        super().__init__(transport)
        self._timeout_s = timeout_s
        self._protocol = protocol

    async def drain(self) -> None:
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._is_writable_event.wait()
        except TimeoutError:
            self._protocol.drop_slow_reader()


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a connection cap, a head size limit and timeout, JSON refusals and a send
    timeout (see the module docstring). `settings` is bound by `guarded_protocol`."""

    settings: ClassVar[HttpSettings]
    lingering: ClassVar[int] = 0  # refused connections lingering now (see _linger), across the server

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._refused = False
        self._lingering = False
        self._lingered_bytes = 0
        self._reading_head = True
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._refusal_due: ServiceError | None = None  # of a pipelined request: written once the replies before it are
        self._upgrade_body_left: int | None = None  # of an Upgrade request: body bytes still to feed (module doc)
        self._upgrade_chunked = False  # an Upgrade request with a chunked body: refused

    # -- connection ------------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.settings.max_connections:
            self._refused = True
            self.transport = transport
            client = transport.get_extra_info("peername")
            _refusals.warning(
                "connections", "refused a connection from %s: %d connections open", client, len(self.connections)
            )
            self._answer_and_close(
                TooManyConnections(
                    f"the server has its maximum of {self.settings.max_connections} connections open "
                    "(HTTP_MAX_CONNECTIONS); retry in a moment",
                    retry_after_s=1,
                )
            )
            return
        super().connection_made(transport)
        self.flow = _SendTimeoutFlow(transport, self.settings.send_timeout_s, self)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
        transport.set_write_buffer_limits(high=SEND_BUFFER_BYTES)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._lingering:
            self._lingering = False
            type(self).lingering -= 1
        if self._refused:
            return
        self._cancel_head_timer()
        super().connection_lost(exc)

    def eof_received(self) -> bool | None:  # type: ignore[override]  # asyncio.Protocol: True keeps it open
        """The client will send nothing more. Lingering: it has read the refusal and is done. A request read whole
        and not yet answered (or queued, or a refusal due): keep the connection open for writing (True) and close
        it once the last reply is out. Otherwise (idle, or half a request): close."""
        if self._lingering:
            self.transport.close()
            return None
        cycle = self.cycle
        answering = cycle is not None and not cycle.response_complete and not cycle.more_body
        if answering or self._refusal_due is not None:
            if cycle is not None:
                cycle.keep_alive = False  # the newest request: uvicorn closes the connection after its reply
            return True
        return None

    def data_received(self, data: bytes) -> None:
        if self._lingering or self._refused or self._refusal_due is not None or self.transport.is_closing():
            self._lingered_bytes += len(data)  # a refused connection's input is dropped unread
            if self._lingered_bytes > LINGER_BYTES:
                self.transport.close()
            return
        self._unset_keepalive_if_required()
        if self._upgrade_body_left is not None:
            self._feed_upgrade_body(data)
            return
        if self._reading_head:
            self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:  # its offset: where the head ended
            self._after_upgrade_head(data[int(upgrade.args[0]) :])
            return
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, _HeadTooLarge):  # raised in on_headers_complete, wrapped by httptools
                self._refuse_head(exc.__context__.size)
                return
            reason = str(exc) or type(exc).__name__
            _refusals.warning("malformed", "refused a malformed request from %s: %s", self.client, reason)
            self._answer_and_close(MalformedRequest(f"invalid HTTP request: {reason}"))
            return
        if self._reading_head and self._head_bytes > self.settings.max_header_bytes:
            self._refuse_head(self._head_bytes)

    def _refuse_head(self, size: int) -> None:
        _refusals.warning("head", "refused a request head of over %d bytes from %s", size, self.client)
        self._answer_and_close(
            HeadTooLarge(
                f"the request line and headers are over {self.settings.max_header_bytes} bytes (HTTP_MAX_HEADER_BYTES)"
            )
        )

    def _after_upgrade_head(self, data: bytes) -> None:
        """`data` came after the head of an Upgrade (or CONNECT) request, which is served as plain HTTP: its body
        goes to the route, and what follows is parsed as the next request (httptools parses on after an upgrade;
        a CONNECT is never answered 2xx, so no tunnel begins)."""
        if self._upgrade_chunked:
            _refusals.warning("upgrade", "refused an Upgrade request with a chunked body from %s", self.client)
            self._answer_and_close(
                MalformedRequest("an Upgrade request with a chunked body is not served; send it without Upgrade")
            )
        elif self._upgrade_body_left is not None:
            self._feed_upgrade_body(data)
        elif data:
            self.data_received(data)

    def _feed_upgrade_body(self, data: bytes) -> None:
        left = self._upgrade_body_left or 0
        body, rest = data[:left], data[left:]
        if body:
            self.on_body(body)
        left -= len(body)
        self._upgrade_body_left = left or None
        if not left:
            self._complete_message()
            if rest:
                self.data_received(rest)

    def send_400_response(self, msg: str) -> None:
        self._answer_and_close(MalformedRequest(f"invalid HTTP request: {msg}"))

    # -- the request head --------------------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._reading_head = True
        if self._head_timer is None:
            self._arm_head_timer()

    def on_headers_complete(self) -> None:
        self._reading_head = False
        self._head_bytes = 0
        self._cancel_head_timer()
        # A head that arrived whole in one read is measured here (a partial one in data_received).
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > self.settings.max_header_bytes:
            raise _HeadTooLarge(size)
        super().on_headers_complete()

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        """Start the route with a `send` that, when the reply begins before the request's body was read to its
        end (a refusal to an upload: 401, 413, 503), says `Connection: close` in it: the rest of that body will not
        be read, so the connection ends with this reply, and a keep-alive client must know that before it sends
        its next request on it. uvicorn writes that header when `keep_alive` is off at the reply's head, and at
        the reply's end closes the socket at once; a socket closed with input unread sends a reset that can
        destroy the reply, so at the end `keep_alive` is on again while the body is still unread, and
        `on_response_complete` lingers instead (see the module docstring)."""
        send = cycle.send
        closing = False

        async def send_closing_if_body_unread(message: ASGISendEvent) -> None:
            nonlocal closing
            if message["type"] == "http.response.start" and cycle.more_body:
                cycle.keep_alive, closing = False, True  # the head says Connection: close
            elif closing and message["type"] == "http.response.body" and not message.get("more_body", False):
                cycle.keep_alive = cycle.more_body  # still unread: on_response_complete lingers instead of closing
            await send(message)

        cycle.send = send_closing_if_body_unread  # type: ignore[method-assign]  # run_asgi hands self.send on
        super()._start_asgi_task(cycle, app)

    def on_response_complete(self) -> None:
        if self._refusal_due is not None and not self.pipeline and not self.transport.is_closing():
            self.server_state.total_requests += 1
            error, self._refusal_due = self._refusal_due, None
            self.transport.write(raw_error_response(error))  # the replies before it are out, in order
            self.flow.resume_reading()  # paused when it was refused: the lingering close reads (and drops) input
            self._linger()
            return
        cycle = self.cycle  # the request just answered, unless a pipelined one is queued behind it (not started)
        if cycle is not None and cycle.response_complete and cycle.more_body and not self.transport.is_closing():
            # Answered before its body was read to its end (a 401, 413 or 503 to an upload): do not parse the rest;
            # drop it as it comes, for as long as a body may take (the client reads the reply once it has sent it).
            self.server_state.total_requests += 1
            cycle.keep_alive = False
            self._linger(self.settings.body_timeout_s)
            self.flow.resume_reading()  # uvicorn paused it while the body waited for the route: drain it now
            return
        super().on_response_complete()

    def on_message_complete(self) -> None:
        if self.parser.should_upgrade():
            # httptools ends the message at an Upgrade head and takes what follows for the new protocol: a body
            # (Content-Length) is fed by _feed_upgrade_body and completes the message there; a chunked one is
            # refused by _after_upgrade_head (the route sees its client gone).
            self._upgrade_chunked = any(name == b"transfer-encoding" for name, _ in self.headers)
            length = next((value for name, value in self.headers if name == b"content-length"), b"0")
            self._upgrade_body_left = int(length) or None  # httptools has checked it is a number
            if self._upgrade_chunked or self._upgrade_body_left:
                return
        self._complete_message()

    def _complete_message(self) -> None:
        super().on_message_complete()
        self._reading_head = True  # whatever comes next is the next request's head

    def _arm_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self.settings.header_timeout_s, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._reading_head or self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # A reply is still on its way; the next head (pipelined) is refused once it is out, if still not whole
            # by then. Checked again later, not dropped: a client could otherwise dribble that head for hours.
            self._arm_head_timer()
            return
        _refusals.warning("head-timeout", "closed a connection from %s: no complete request head", self.client)
        self._answer_and_close(
            RequestTimeout(
                f"no complete request head within {self.settings.header_timeout_s:g} s (HTTP_HEADER_TIMEOUT_S)"
            )
        )

    # -- answers ------------------------------------------------------------------------------------------------

    def _answer_and_close(self, error: ServiceError) -> None:
        self._cancel_head_timer()
        cycle = self.cycle
        queued = bool(self.pipeline) and self.pipeline[0][0] is cycle  # its head is read; it waits for its turn
        if cycle is not None and not cycle.response_complete and (queued or not cycle.more_body):
            # What failed is a request pipelined behind one still being answered: its head (no cycle yet), or its
            # body while it waits in the pipeline (it never runs). Refused once the replies before it are out
            # (on_response_complete); nothing more is parsed.
            if queued and cycle.more_body:  # the failure is in its body: it is the one refused
                self.pipeline.popleft()
            self._refusal_due = error
            self.flow.pause_reading()
            return
        if cycle is not None and not cycle.response_complete:
            if cycle.response_started:  # a reply is being written: ours cannot go in between; just end the stream
                cycle.keep_alive = False
                self.transport.close()
                return
            # The route is still reading the body (a chunk size that does not parse): answer here, and let the
            # route see a disconnected client, whose own reply then goes nowhere.
            cycle.disconnected = True
            cycle.message_event.set()
        self.transport.write(raw_error_response(error))
        self._linger()

    def _linger(self, seconds: float = LINGER_S) -> None:
        """Half-close after the refusal and drop input for up to `seconds` (see the module docstring); at once when
        as many refused connections linger already as the server may have open (a flood of them)."""
        cls = type(self)
        if cls.lingering >= self.settings.max_connections or not self.transport.can_write_eof():
            self.transport.close()
            return
        self._lingering = True
        cls.lingering += 1
        self.transport.write_eof()
        self.loop.call_later(seconds, self.transport.close)

    def drop_slow_reader(self) -> None:
        """The client has read nothing of its reply for HTTP_SEND_TIMEOUT_S: drop it (the stream ends)."""
        _refusals.warning(
            "send-timeout",
            "dropped %s: it read nothing of its reply for %g s (HTTP_SEND_TIMEOUT_S)",
            self.client,
            self.settings.send_timeout_s,
        )
        self.transport.abort()


def guarded_protocol(settings: HttpSettings) -> type[GuardedProtocol]:
    """The protocol class for uvicorn's `http=`, bound to `settings`."""
    return type("GuardedHttpProtocol", (GuardedProtocol,), {"settings": settings})


def server_config(app: Any, host: str, port: int, settings: HttpSettings, **overrides: Any) -> uvicorn.Config:
    """The uvicorn configuration of a service: uvloop, the guarded httptools protocol, no access log of its own
    (the HTTP guard writes one JSON line per request), no `server` header, the keep-alive timeout."""
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "loop": "uvloop",
        "http": guarded_protocol(settings),
        # No WebSocket: a handshake is served as plain HTTP (guarded, counted, authenticated) even where a WebSocket
        # library happens to be installed (the test environment's selenium brings wsproto).
        "ws": "none",
        "log_config": None,  # keep the handlers configure_logging installed
        "access_log": False,
        "server_header": False,
        # No X-Forwarded-For from 127.0.0.1 taken as the client: rate limits and the access log use the peer's
        # address, which a local client could otherwise choose (and one middleware less per request).
        "proxy_headers": False,
        "timeout_keep_alive": settings.keepalive_s,
        "timeout_graceful_shutdown": 5,
        "lifespan": "on",
    }
    options.update(overrides)
    return uvicorn.Config(app, **options)


def serve(app: Any, host: str, port: int, settings: HttpSettings) -> None:
    """Run `app` until SIGINT/SIGTERM (blocking), as `uvicorn.run` does: after a graceful shutdown uvicorn raises
    the signal again, so SIGTERM ends the process with it and SIGINT's KeyboardInterrupt is not a traceback."""
    server = uvicorn.Server(server_config(app, host, port, settings))
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    if not server.started:
        raise SystemExit(3)  # uvicorn's STARTUP_FAILURE: it could not bind, or the app's startup failed
