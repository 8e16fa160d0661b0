"""A real SMTP server for the alert tests: aiosmtpd on a loopback port, in its own thread, with STARTTLS required
before AUTH (or implicit TLS), a username and password, and a list of every mail it accepted.

`stop()` and `start()` again on the same port make an outage; `messages` are `email.message.EmailMessage`s with
their envelope recipients in `received` (the header `To` is what the sender wrote). Mail to an address at
`refused.invalid` is refused (550), as an unknown mailbox is.
"""

from __future__ import annotations

import email
import email.policy
import functools
import ssl
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from mqtt_broker import TlsFiles, free_port, make_tls


@functools.cache
def shared_tls() -> TlsFiles:
    """One throw-away CA and server certificate (for localhost and 127.0.0.1) per test run: openssl takes seconds."""
    return make_tls(Path(tempfile.mkdtemp(prefix="korall-smtp-tls-")), "localhost")


@dataclass
class Received:
    message: EmailMessage
    recipients: list[str]
    at: float


@dataclass
class MailServer:
    """`security`: starttls (required before AUTH), tls (implicit) or none (and then no AUTH)."""

    username: str = "alerts@example.org"
    password: str = "s3cret-pass"
    security: str = "starttls"
    port: int = field(default_factory=free_port)
    received: list[Received] = field(default_factory=list)
    logins: list[tuple[str, bool]] = field(default_factory=list)
    _controller: Controller | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    tls: TlsFiles = field(default_factory=shared_tls)

    @property
    def ca_pem(self) -> str:
        return self.tls.ca.read_text()

    def _context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(self.tls.cert), str(self.tls.key))
        return context

    def _authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login.decode(), data.password.decode()) == (
            self.username,
            self.password,
        )
        self.logins.append((data.login.decode() if isinstance(data, LoginPassword) else "?", ok))
        return AuthResult(success=ok, handled=False)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        """Addresses at refused.invalid do not exist here (550), as a real server says of an unknown mailbox."""
        if address.endswith("@refused.invalid"):
            return "550 5.1.1 no such mailbox here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        if self.security != "none" and not session.authenticated:
            return "530 5.7.0 Authentication required"
        with self._lock:
            self.received.append(Received(message, list(envelope.rcpt_tos), time.monotonic()))
        return "250 OK"

    def start(self) -> MailServer:
        kwargs: dict[str, Any] = {"hostname": "127.0.0.1", "port": self.port, "ready_timeout": 10}
        if self.security == "starttls":
            kwargs |= {"tls_context": self._context(), "require_starttls": True, "auth_require_tls": True}
        elif self.security == "tls":
            kwargs |= {"ssl_context": self._context(), "auth_require_tls": False}  # TLS from the first byte
        if self.security != "none":
            kwargs |= {"authenticator": self._authenticate, "auth_required": True}
        self._controller = Controller(self, **kwargs)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    @property
    def messages(self) -> list[EmailMessage]:
        with self._lock:
            return [r.message for r in self.received]

    def wait_for(self, count: int, timeout: float, what: str = "") -> list[EmailMessage]:
        """Wait until at least `count` mails arrived; returns them all."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.messages) >= count:
                return self.messages
            time.sleep(0.05)
        subjects = [m["Subject"] for m in self.messages]
        raise AssertionError(f"expected {count} mails {what} within {timeout} s, got {len(subjects)}: {subjects}")

    def matching(self, predicate: Callable[[EmailMessage], bool]) -> list[EmailMessage]:
        return [m for m in self.messages if predicate(m)]
