"""Sending alert mails to a real SMTP server (aiosmtpd, tests/operator/smtp_server.py): STARTTLS before AUTH,
implicit TLS, and every way the settings can be wrong, each a MailError that says what to fix."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from korall_operator.alerting.grouping import Engine
from korall_operator.alerting.mail import render
from korall_operator.alerting.policy import AlertKey, Firing, Policy
from korall_operator.alerting.smtp import Credentials, MailError, PartlyRefused, SmtpServer, send
from mqtt_broker import free_port
from smtp_server import MailServer

T0 = 1_750_000_000.0

# aiosmtpd warns about AUTH without STARTTLS even on an implicit-TLS server, whose every byte is encrypted.
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")


def a_mail(to: list[str]) -> object:
    engine = Engine(Policy(group_wait_s=1))
    key = AlertKey("shop", "InferenceModel", "front-door", "CameraUnavailable")
    engine.observe([Firing(key, "critical", "pod front-door-vision-1: the camera stopped streaming", T0)], T0)
    (notification,) = engine.due(T0 + 1)
    return render(notification, sender="korall@example.org", recipients=to, cluster="edge-eu", now=T0 + 1)


@pytest.fixture(params=["starttls", "tls"])
def server(request: pytest.FixtureRequest) -> Iterator[MailServer]:
    mail = MailServer(security=request.param).start()
    yield mail
    mail.stop()


def test_a_mail_goes_out_over_tls_with_a_login(server: MailServer) -> None:
    to = ["ops@example.org", "oncall@example.org"]
    target = SmtpServer("localhost", server.port, server.security, timeout_s=5)  # type: ignore[arg-type]
    send(target, Credentials(server.username, server.password, server.ca_pem), a_mail(to), to)  # type: ignore[arg-type]
    (got,) = server.wait_for(1, timeout=5)
    assert server.received[0].recipients == to
    assert server.logins == [(server.username, True)]
    assert got["Subject"] == "[korall edge-eu] FIRING critical: CameraUnavailable on InferenceModel shop/front-door"
    assert got["From"] == "korall@example.org" and got["To"] == "ops@example.org, oncall@example.org"
    assert got["Message-ID"].endswith("@example.org>") and got["X-Korall-Firing"] == "1"
    text = got.get_content()
    assert "1 alert FIRING (severity critical) on edge-eu." in text
    assert "the camera stopped streaming" in text and "kubectl -n shop describe inferencemodel front-door" in text


def _failure(target: SmtpServer, credentials: Credentials, to: list[str] | None = None) -> MailError:
    to = to or ["ops@example.org"]
    with pytest.raises(MailError) as caught:
        send(target, credentials, a_mail(to), to)  # type: ignore[arg-type]
    return caught.value


def test_bad_settings_say_what_to_fix() -> None:
    server = MailServer().start()
    plain = MailServer(security="none").start()
    try:
        good = Credentials(server.username, server.password, server.ca_pem)
        starttls = SmtpServer("localhost", server.port, "starttls", timeout_s=5)

        wrong = _failure(starttls, Credentials(server.username, "not-the-password", server.ca_pem))
        assert (wrong.kind, wrong.settings) == ("auth", True)
        assert "refused the login of 'alerts@example.org'" in wrong.message and "535" in wrong.message
        assert "not-the-password" not in str(wrong) + repr(Credentials("u", "not-the-password"))

        untrusted = _failure(starttls, Credentials(server.username, server.password))  # no CA: not verified
        assert untrusted.kind == "tls" and "CERTIFICATE_VERIFY_FAILED" in untrusted.message

        no_starttls = _failure(SmtpServer("localhost", plain.port, "starttls", timeout_s=5), good)
        assert no_starttls.kind == "tls" and "does not offer STARTTLS" in no_starttls.message

        nobody = _failure(starttls, good, ["ghost@refused.invalid"])
        assert nobody.kind == "refused" and "ghost@refused.invalid (550" in nobody.message

        with pytest.raises(PartlyRefused, match=r"ghost@refused\.invalid"):
            to = ["ops@example.org", "ghost@refused.invalid"]
            send(starttls, good, a_mail(to), to)  # type: ignore[arg-type]
        assert [r.recipients for r in server.received] == [["ops@example.org"]]  # the others got it

        down = _failure(SmtpServer("127.0.0.1", free_port(), "starttls", timeout_s=2), good)
        assert (down.kind, down.settings) == ("connect", False) and "ConnectionRefusedError" in down.message
    finally:
        server.stop()
        plain.stop()
