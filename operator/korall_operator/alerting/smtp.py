"""Sending one mail over SMTP with the standard library's smtplib (blocking: the service runs it in a thread).

STARTTLS (the server must offer it: a plain-text login is never sent over a connection that was not upgraded),
implicit TLS, or nothing for a local relay; the certificate is checked against the system's CAs or the Secret's
`ca.crt`. Every failure becomes a MailError with a kind and a message that says what to fix; `settings` failures
(refused login, a certificate that does not verify, a refused sender or recipient, no STARTTLS) need a person,
the others (the server unreachable or answering 4xx) need time. Both are retried: a fixed Secret heals without a
restart, and nothing is dropped.
"""

from __future__ import annotations

import smtplib
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Literal

Security = Literal["starttls", "tls", "none"]


@dataclass(frozen=True)
class SmtpServer:
    host: str
    port: int
    security: Security = "starttls"
    timeout_s: float = 20.0

    def __str__(self) -> str:
        return f"{self.host}:{self.port} ({self.security})"


@dataclass(frozen=True)
class Credentials:
    """From the SMTP Secret; the password never appears in a repr or a log line."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_pem: str | None = field(default=None, repr=False)


class MailError(Exception):
    """A mail was not sent. `kind`: connect, tls, auth, refused, protocol or secret; `settings`: a person must fix
    the configuration (the Secret or the chart values), as opposed to waiting for the server."""

    SETTINGS_KINDS = frozenset({"tls", "auth", "refused", "secret"})

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message

    @property
    def settings(self) -> bool:
        return self.kind in self.SETTINGS_KINDS


def _tls_context(credentials: Credentials) -> ssl.SSLContext:
    if credentials.ca_pem:
        return ssl.create_default_context(cadata=credentials.ca_pem)
    return ssl.create_default_context()


def send(server: SmtpServer, credentials: Credentials, message: EmailMessage, recipients: Sequence[str]) -> None:
    """Deliver `message` to `recipients` through `server`; raises MailError. Blocking."""
    try:
        _send(server, credentials, message, recipients)
    except MailError:
        raise
    except smtplib.SMTPAuthenticationError as e:
        raise MailError("auth", f"the SMTP server {server} refused the login of {credentials.username!r}: "
                        f"{_reply(e)}") from e  # fmt: skip
    except smtplib.SMTPSenderRefused as e:
        raise MailError("refused", f"the SMTP server {server} refused the sender {e.sender!r}: {_reply(e)}") from e
    except smtplib.SMTPRecipientsRefused as e:
        refused = ", ".join(f"{addr} ({code} {_text(text)})" for addr, (code, text) in e.recipients.items())
        raise MailError("refused", f"the SMTP server {server} refused every recipient: {refused}") from e
    except smtplib.SMTPNotSupportedError as e:
        raise MailError("tls", f"the SMTP server {server}: {e} (is alerts.smtp.security right?)") from e
    except ssl.SSLError as e:  # includes certificate verification
        raise MailError("tls", f"TLS with the SMTP server {server} failed: {e}") from e
    except smtplib.SMTPResponseException as e:
        kind = "refused" if 500 <= e.smtp_code < 600 else "protocol"
        raise MailError(kind, f"the SMTP server {server} answered {_reply(e)}") from e
    except (smtplib.SMTPException, OSError) as e:  # connection refused, timeouts, DNS, a dropped connection
        detail = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        raise MailError("connect", f"cannot reach the SMTP server {server}: {detail}") from e


def _send(server: SmtpServer, credentials: Credentials, message: EmailMessage, recipients: Sequence[str]) -> None:
    context = _tls_context(credentials) if server.security != "none" else None
    client: smtplib.SMTP
    if server.security == "tls":
        client = smtplib.SMTP_SSL(server.host, server.port, timeout=server.timeout_s, context=context)
    else:
        client = smtplib.SMTP(server.host, server.port, timeout=server.timeout_s)
    with client:
        client.ehlo_or_helo_if_needed()
        if server.security == "starttls":
            if not client.has_extn("starttls"):
                raise MailError("tls", f"the SMTP server {server} does not offer STARTTLS; the password is not sent "
                                       "in the clear (set alerts.smtp.security)")  # fmt: skip
            client.starttls(context=context)
            client.ehlo()
        if credentials.username:
            client.login(credentials.username, credentials.password or "")
        refused = client.send_message(message, to_addrs=list(recipients))
    if refused:  # some recipients took it: the mail went out, the rest is for the log
        raise PartlyRefused(refused)


class PartlyRefused(MailError):
    """Some recipients refused the mail, the others got it: it counts as sent."""

    def __init__(self, refused: dict[str, tuple[int, bytes]]) -> None:
        text = ", ".join(f"{addr} ({code} {_text(reply)})" for addr, (code, reply) in refused.items())
        super().__init__("refused", f"recipients refused: {text}")


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _reply(e: smtplib.SMTPResponseException) -> str:
    return f"{e.smtp_code} {_text(e.smtp_error)}"


def host_of(address: str) -> str:
    return address.rpartition("@")[2] or socket.getfqdn()
