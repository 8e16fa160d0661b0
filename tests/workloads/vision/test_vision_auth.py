"""Bearer tokens, rotation, scopes, the page cookie, rate limits and the access log, on the vision service served by
the production server on a loopback port, with a real token file (hashes only, as the Secret holds them)."""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from guarded_server import GuardedServer, closed_by_peer, connect, json_error, read_reply
from korall_contract import HttpEnv, VisionEnv, env_names
from korall_workloads.common.auth import RELOAD_EVERY_S, TokenFileError, parse_tokens
from korall_workloads.common.http_settings import HttpSettings
from korall_workloads.vision.app import create_app
from korall_workloads.vision.detector import Detector
from vision_helpers import ROOT, settings

CI = secrets.token_urlsafe(32)
GRAFANA = secrets.token_urlsafe(32)
NEXT = secrets.token_urlsafe(32)


def line(name: str, token: str, scopes: str = "") -> str:
    return f"{name} sha256:{hashlib.sha256(token.encode()).hexdigest()} {scopes}".strip()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def tokens_file(tmp_path: Path) -> Path:
    path = tmp_path / "tokens"
    path.write_text(f"# the token Secret\n{line('ci', CI, 'infer,read')}\n{line('grafana', GRAFANA, 'metrics')}\n")
    return path


@pytest.fixture
def server(detector: Detector, tokens_file: Path) -> Iterator[GuardedServer]:
    http = HttpSettings(
        auth_tokens_file=tokens_file, auth_metrics=True, rate_limit_per_client="", rate_limit_per_token=""
    )
    with GuardedServer(create_app(settings(), detector=detector, http=http), http) as srv:
        yield srv


def test_probes_are_open_and_everything_else_needs_a_token_with_its_scope(
    server: GuardedServer, jpegs: dict[str, bytes]
) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.get("/health").status_code == 200 and client.get("/ready").status_code == 200

        none = client.post("/infer", content=jpegs["chelsea"])
        assert none.status_code == 401 and none.headers["www-authenticate"] == 'Bearer realm="korall"'
        assert json_error(none.content)["code"] == "unauthorized"

        wrong = client.post("/infer", content=jpegs["chelsea"], headers=bearer(secrets.token_urlsafe(32)))
        assert wrong.status_code == 401 and 'error="invalid_token"' in wrong.headers["www-authenticate"]
        basic = client.get("/models", headers={"Authorization": "Basic Y2k6c2VjcmV0"})
        assert basic.status_code == 401

        ok = client.post("/infer", content=jpegs["chelsea"], headers=bearer(CI))
        assert ok.status_code == 200 and ok.json()["detections"][0]["label"] == "cat"
        assert client.get("/models", headers=bearer(CI)).status_code == 200

        denied = client.get("/metrics", headers=bearer(CI))
        assert denied.status_code == 403 and json_error(denied.content)["code"] == "forbidden"
        assert denied.headers["www-authenticate"].endswith('error="insufficient_scope", scope="metrics"')
        assert client.get("/metrics", headers=bearer(GRAFANA)).status_code == 200
        assert client.get("/models", headers=bearer(GRAFANA)).status_code == 403
        assert client.get("/no/such/route", headers=bearer(CI)).status_code == 404  # past auth: the usual 404


def test_a_large_upload_without_a_token_reads_its_401_after_sending_everything(server: GuardedServer) -> None:
    """Refused before its body is read: the server drops the rest unparsed (it would not parse 8 MB for nothing) yet
    keeps reading until the client has sent it all, so that the client, which reads only then, gets the 401."""
    body = bytes(8 * 1024 * 1024)
    for _ in range(2):  # on a new connection each time: the refused one is closed
        reply = httpx.post(server.url + "/infer", content=body, timeout=30)
        assert reply.status_code == 401 and json_error(reply.content)["code"] == "unauthorized"


def test_a_refusal_before_the_body_has_arrived_says_the_connection_closes(server: GuardedServer) -> None:
    """The 401 goes out while the body is still on its way, so the server will not read the rest: it must say
    `Connection: close`, or a keep-alive client sends its next request on a connection about to close and reads
    "server disconnected" (a CI run met this with a small JPEG whose body came a moment after its head)."""
    sock = connect(server.port)
    sock.sendall(b"POST /infer HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + bytes(1000))
    status, headers, body = read_reply(sock)
    assert status == 401 and json_error(body)["code"] == "unauthorized"
    assert headers.get("connection") == "close"
    assert closed_by_peer(sock)
    sock.close()


def test_a_client_that_reads_only_after_sending_all_gets_the_401_every_time(server: GuardedServer) -> None:
    """As http.client (and most simple clients) do: the whole 3 MB body first, then the reply. The server refuses
    at the head, says Connection: close, and drains the rest instead of closing on unread input (which would send
    a reset and destroy the reply: 5 of 20 were lost that way when the close came at once)."""
    body = bytes(3_000_000)
    for _ in range(10):
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        conn.request("POST", "/infer", body=body, headers={"Content-Type": "image/jpeg"})
        reply = conn.getresponse()
        assert reply.status == 401 and reply.getheader("connection") == "close"
        assert json_error(reply.read())["code"] == "unauthorized"
        conn.close()


def test_rotation_keeps_two_tokens_valid_then_drops_the_old_one(
    server: GuardedServer, tokens_file: Path, jpegs: dict[str, bytes]
) -> None:
    """Add the new token's line, move the clients over, remove the old line: no moment without a valid token."""
    with httpx.Client(base_url=server.url, timeout=30) as client:
        tokens_file.write_text(f"{line('ci', CI, 'infer,read')}\n{line('ci-next', NEXT, 'infer,read')}\n")
        time.sleep(RELOAD_EVERY_S + 0.1)
        for token in (CI, NEXT):
            assert client.post("/infer", content=jpegs["coffee"], headers=bearer(token)).status_code == 200
        replacement = tokens_file.with_name("tokens.new")  # as the kubelet updates a mounted Secret: a new file
        replacement.write_text(f"{line('ci-next', NEXT, 'infer,read')}\n")
        replacement.replace(tokens_file)
        time.sleep(RELOAD_EVERY_S + 0.1)
        assert client.post("/infer", content=jpegs["coffee"], headers=bearer(CI)).status_code == 401
        assert client.post("/infer", content=jpegs["coffee"], headers=bearer(NEXT)).status_code == 200
        tokens_file.write_text("this line is not a token line\n")  # a broken update keeps the tokens in force
        time.sleep(RELOAD_EVERY_S + 0.1)
        assert client.post("/infer", content=jpegs["coffee"], headers=bearer(NEXT)).status_code == 200


def test_a_page_gets_the_token_once_in_its_link_and_then_sends_the_cookie(server: GuardedServer) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        first = client.get("/models", params={"access_token": CI})
        assert first.status_code == 200
        cookie = first.headers["set-cookie"]
        assert cookie.startswith(f"korall_token={CI};") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        client.cookies.clear()
        again = client.get("/models", headers={"Cookie": f"korall_token={CI}"})
        assert again.status_code == 200 and "set-cookie" not in again.headers
        # only a GET may carry the token in its URL: a POST with it is refused
        assert client.post("/infer", params={"access_token": CI}, content=b"x").status_code == 401


def test_the_page_and_its_files_open_without_a_token_and_the_api_behind_them_does_not(server: GuardedServer) -> None:
    """The README says: open http://host:5052/#token=<token>. The fragment never reaches the server, so the page
    itself must be served without one (it holds no data, asks for a token and sends it on every call); the page
    was a 401 JSON document instead."""
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for path in ("/", "/static/korall.js", "/static/vision.js"):
            for headers in ({}, bearer(secrets.token_urlsafe(32)), bearer(GRAFANA)):  # none, unknown, no read scope
                reply = client.get(path, headers=headers)
                assert reply.status_code == 200 and "set-cookie" not in reply.headers, (path, reply.text[:200])
        assert client.get("/static/nope.js").status_code == 404
        opened = client.get("/", params={"access_token": CI})  # a valid token given with it still sets the cookie
        assert opened.status_code == 200 and opened.headers["set-cookie"].startswith(f"korall_token={CI};")
        client.cookies.clear()
        for path in ("/models", "/detections", "/docs", "/staticky"):
            assert client.get(path).status_code == 401, path


def test_the_access_log_names_the_token_and_never_shows_it(
    server: GuardedServer, jpegs: dict[str, bytes], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="korall.access"), httpx.Client(base_url=server.url, timeout=30) as c:
        c.post("/infer", content=jpegs["chelsea"], headers=bearer(CI), params={"score_th": "0.4"})
        c.get("/models", params={"access_token": CI})
        c.post("/infer", content=b"x", headers=bearer("not-a-token"))
        time.sleep(0.1)  # the last line is kept once the reply is out
        server.app.state.access_log.flush()  # written by its own thread every 0.1 s; now, for the test
    # the service's records (the test's own HTTP client logs the URLs it asks for, query included)
    text = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith(("httpx", "httpcore")))
    assert CI not in text and "not-a-token" not in text
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "korall.access"]
    infer, page, refused = lines[-3:]
    assert infer["token"] == "ci" and infer["status"] == 200 and infer["bytes_in"] == len(jpegs["chelsea"])
    assert infer["query"] == "score_th=0.4" and infer["model_sha256"] and infer["infer"]["detections"] >= 1
    assert infer["bytes_out"] > 0 and infer["latency_ms"] > 0 and infer["client"] == "127.0.0.1"
    assert page["query"] == "access_token=***" and page["token"] == "ci"
    assert refused["status"] == 401 and refused["token"] is None and refused["error"] == "unauthorized"


def test_rate_limits_per_client_and_per_token_answer_429_with_retry_after(
    detector: Detector, tokens_file: Path
) -> None:
    http = HttpSettings(auth_tokens_file=tokens_file, rate_limit_per_client="4/second", rate_limit_per_token="2/second")
    with GuardedServer(create_app(settings(), detector=detector, http=http), http) as srv:
        with httpx.Client(base_url=srv.url, timeout=30) as client:
            statuses = [client.get("/models", headers=bearer(CI)).status_code for _ in range(3)]
            assert statuses == [200, 200, 429]  # the token's limit first: 2 a second
            limited = client.get("/models", headers=bearer(CI))
            assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
            assert "RATE_LIMIT_PER_TOKEN" in json_error(limited.content)["message"]
            assert all(client.get("/health").status_code == 200 for _ in range(10))  # probes are exempt
            over = client.get("/models", headers=bearer(GRAFANA))  # the 5th from this address within a second
            assert over.status_code == 429 and "RATE_LIMIT_PER_CLIENT" in json_error(over.content)["message"]
        # another address has its own count
        with httpx.Client(
            base_url=srv.url, timeout=30, transport=httpx.HTTPTransport(local_address="127.0.0.2")
        ) as other:
            assert other.get("/models", headers=bearer(GRAFANA)).status_code == 403  # scope, not rate


def _run_main(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in env_names(VisionEnv) | env_names(HttpEnv)}
    base["PYTHONPATH"] = os.pathsep.join(str(ROOT / d) for d in ("contract", "workloads"))
    return subprocess.run(
        [sys.executable, "-m", "korall_workloads.vision"],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_token_file_that_does_not_parse_stops_the_service_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "tokens"
    bad.write_text(f"{line('ci', CI)}\nci2 {CI}\n")  # a raw token where the hash goes: a mistake to refuse
    done = _run_main({HttpEnv.AUTH_TOKENS_FILE: str(bad), VisionEnv.PORT: "1"})
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert "AUTH_TOKENS_FILE" in done.stderr and "line 2" in done.stderr and CI not in done.stderr


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("ci sha256:abc", "expected"),
        (f"{line('ci', CI)}\n{line('ci', NEXT)}", "used twice"),
        (line("ci", CI, "infer,admin"), "unknown scope"),
    ],
    ids=["not-a-hash", "name-twice", "unknown-scope"],  # the tokens are random: ids the same in every process
)
def test_token_lines_are_checked(text: str, reason: str) -> None:
    with pytest.raises(TokenFileError, match=reason):
        parse_tokens(text)


def test_scopes_default_to_all() -> None:
    (token,) = parse_tokens(line("ci", CI))
    assert token.scopes == {"infer", "read", "metrics"}
    assert token.digest == hashlib.sha256(CI.encode()).digest()
