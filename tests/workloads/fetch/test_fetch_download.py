"""The downloader against a real HTTP server: streaming, verifying, resuming, retrying, the cache.

Each test runs `python -m korall_workloads.fetch` as a process, as the init container does, and checks its
exit code, its termination message, what the server saw and what is left in the cache folder.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

from fetch_helpers import MODEL, MODEL_SHA256, RunFetch, cache_files, fetch_env
from object_server import Misbehaviour, ObjectServer

SIZE = MODEL.stat().st_size


def cached(tmp_path: Path) -> Path:
    return tmp_path / "cache" / "sha256" / MODEL_SHA256


def test_the_model_lands_verified_and_read_only_under_its_sha256(
    tmp_path: Path, server: ObjectServer, run_fetch: RunFetch
) -> None:
    run = run_fetch(MODEL_SHA256=MODEL_SHA256, MODEL_URL=server.put("/m.tflite", MODEL))
    assert run.code == 0, run.stderr
    assert cached(tmp_path).read_bytes() == MODEL.read_bytes()
    assert stat.S_IMODE(cached(tmp_path).stat().st_mode) == 0o444
    assert cache_files(tmp_path) == [MODEL_SHA256, f"{MODEL_SHA256}.lock"]  # no partial left
    assert run.message.startswith(f"ModelFetched: sha256:{MODEL_SHA256} {SIZE} bytes")
    assert len(server.requests) == 1 and server.requests[0].range is None


def test_a_cached_model_is_reverified_and_no_request_is_made(
    tmp_path: Path, server: ObjectServer, run_fetch: RunFetch
) -> None:
    url = server.put("/m.tflite", MODEL)
    assert run_fetch(MODEL_SHA256=MODEL_SHA256, MODEL_URL=url).code == 0
    with ObjectServer() as second:
        second.put("/m.tflite", MODEL)
        run = run_fetch(MODEL_SHA256=MODEL_SHA256, MODEL_URL=second.url("/m.tflite"))
        assert run.code == 0 and "cache hit, no request" in run.message
        assert second.requests == []
    # Not even a link is needed then: a pod restarted after its link Secret was deleted still starts.
    assert run_fetch(MODEL_SHA256=MODEL_SHA256).code == 0


def test_a_corrupt_cached_model_is_replaced(tmp_path: Path, server: ObjectServer, run_fetch: RunFetch) -> None:
    url = server.put("/m.tflite", MODEL)
    assert run_fetch(MODEL_SHA256=MODEL_SHA256, MODEL_URL=url).code == 0
    os.chmod(cached(tmp_path), 0o644)
    cached(tmp_path).write_bytes(b"bit rot")
    run = run_fetch(MODEL_SHA256=MODEL_SHA256, MODEL_URL=url)
    assert run.code == 0 and "corrupt" in run.stderr
    assert cached(tmp_path).read_bytes() == MODEL.read_bytes() and len(server.requests) == 2


def test_a_wrong_sha256_is_refused_and_nothing_is_left_in_the_cache(
    tmp_path: Path, server: ObjectServer, run_fetch: RunFetch
) -> None:
    wrong = "ab" * 32
    run = run_fetch(MODEL_SHA256=wrong, MODEL_URL=server.put("/m.tflite", MODEL) + "?X-Amz-Signature=s3cr3t")
    assert run.code == 4
    assert run.message.startswith("ModelDownloadFailed: ChecksumMismatch: ")
    assert MODEL_SHA256 in run.message and wrong in run.message and "nothing was kept" in run.message
    assert "s3cr3t" not in run.message + run.stderr  # the link's signature is never shown
    assert run.message in run.stderr and "\n" not in run.message
    assert cache_files(tmp_path) == [f"{wrong}.lock"]


def test_a_connection_dropped_halfway_is_resumed_with_range_and_verified(
    tmp_path: Path, server: ObjectServer, run_fetch: RunFetch
) -> None:
    half = SIZE // 2
    url = server.put("/m.tflite", MODEL, Misbehaviour(drop_after=half))
    run = run_fetch(MODEL_SHA256=MODEL_SHA256, MODEL_URL=url)
    assert run.code == 0, run.stderr
    assert [r.range for r in server.requests] == [None, f"bytes={half}-"]
    assert cached(tmp_path).read_bytes() == MODEL.read_bytes()
    assert "2 requests" in run.message


def test_a_server_that_ignores_range_gets_the_whole_file_again(
    tmp_path: Path, server: ObjectServer, run_fetch: RunFetch
) -> None:
    url = server.put("/m.tflite", MODEL, Misbehaviour(drop_after=SIZE // 3, ignore_range=True))
    run = run_fetch(MODEL_SHA256=MODEL_SHA256, MODEL_URL=url)
    assert run.code == 0, run.stderr
    assert server.requests[1].range == f"bytes={SIZE // 3}-" and "ignored the Range request" in run.stderr
    assert cached(tmp_path).read_bytes() == MODEL.read_bytes()


def test_a_download_interrupted_in_an_earlier_run_resumes_where_it_stopped(
    tmp_path: Path, server: ObjectServer, run_fetch: RunFetch
) -> None:
    third = SIZE // 3
    url = server.put("/m.tflite", MODEL, Misbehaviour(drop_after=third, drops=3))
    failed = run_fetch(MODEL_SHA256=MODEL_SHA256, MODEL_URL=url, MODEL_FETCH_ATTEMPTS="1")
    assert failed.code == 11 and failed.message.startswith("ModelDownloadFailed: NetworkError: ")
    partial = tmp_path / "cache" / "sha256" / f"{MODEL_SHA256}.partial"
    assert partial.stat().st_size == third
    run = run_fetch(MODEL_SHA256=MODEL_SHA256, MODEL_URL=server.put("/whole.tflite", MODEL))
    assert run.code == 0 and server.gets("/whole.tflite")[0].range == f"bytes={third}-"
    assert cached(tmp_path).read_bytes() == MODEL.read_bytes() and not partial.exists()


def test_bytes_left_by_an_earlier_run_that_fail_the_hash_are_downloaded_once_more(
    tmp_path: Path, server: ObjectServer, run_fetch: RunFetch
) -> None:
    folder = tmp_path / "cache" / "sha256"
    folder.mkdir(parents=True)
    (folder / f"{MODEL_SHA256}.partial").write_bytes(b"\0" * 4096)  # what a power cut can leave
    run = run_fetch(MODEL_SHA256=MODEL_SHA256, MODEL_URL=server.put("/m.tflite", MODEL))
    assert run.code == 0, run.stderr
    assert [r.range for r in server.requests] == ["bytes=4096-", None]
    assert cached(tmp_path).read_bytes() == MODEL.read_bytes()


def test_a_partial_file_longer_than_the_object_gets_416_and_starts_over(
    tmp_path: Path, server: ObjectServer, run_fetch: RunFetch
) -> None:
    folder = tmp_path / "cache" / "sha256"
    folder.mkdir(parents=True)
    (folder / f"{MODEL_SHA256}.partial").write_bytes(b"x" * (SIZE + 10))
    run = run_fetch(MODEL_SHA256=MODEL_SHA256, MODEL_URL=server.put("/m.tflite", MODEL))
    assert run.code == 0, run.stderr
    assert [r.range for r in server.requests] == [f"bytes={SIZE + 10}-", None] and "416" in run.stderr
    assert cached(tmp_path).read_bytes() == MODEL.read_bytes()


def test_concurrent_downloads_of_one_model_make_one_request_and_one_file(tmp_path: Path, server: ObjectServer) -> None:
    """Four processes at once on one cache (four pods on one node): one downloads, three wait and re-verify."""
    url = server.put("/m.tflite", MODEL, Misbehaviour(hold_s=1.5))
    env = fetch_env(tmp_path, MODEL_SHA256=MODEL_SHA256, MODEL_URL=url)
    procs = [
        subprocess.Popen([sys.executable, "-m", "korall_workloads.fetch"], env=env, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    results = [(p.wait(timeout=60), p.stderr.read() if p.stderr else "") for p in procs]
    assert [code for code, _ in results] == [0, 0, 0, 0], results
    assert len(server.requests) == 1
    assert sum("cache hit" in err for _, err in results) == 3
    assert any("waiting for it" in err for _, err in results)
    assert cached(tmp_path).read_bytes() == MODEL.read_bytes()
    assert cache_files(tmp_path) == [MODEL_SHA256, f"{MODEL_SHA256}.lock"]


def test_a_missing_object_is_not_found_and_not_retried(
    tmp_path: Path, server: ObjectServer, run_fetch: RunFetch
) -> None:
    run = run_fetch(MODEL_SHA256=MODEL_SHA256, MODEL_URL=server.url("/nope.tflite"))
    assert run.code == 7 and run.message.startswith("ModelDownloadFailed: NotFound: ")
    assert "NoSuchKey" in run.message and len(server.requests) == 1


def test_a_refused_link_is_access_denied(tmp_path: Path, server: ObjectServer, run_fetch: RunFetch) -> None:
    denied = b"<Error><Code>SignatureDoesNotMatch</Code><Message>The request signature we calculated does not match"
    url = server.put("/m.tflite", MODEL, Misbehaviour(statuses=[(403, denied + b"</Message></Error>")]))
    run = run_fetch(MODEL_SHA256=MODEL_SHA256, MODEL_URL=url)
    assert run.code == 6 and run.message.startswith("ModelDownloadFailed: AccessDenied: ")
    assert "SignatureDoesNotMatch" in run.message and len(server.requests) == 1


def test_a_refused_link_is_retried_when_the_link_file_holds_a_new_one(tmp_path: Path, run_fetch: RunFetch) -> None:
    """The operator re-signs into the mounted link Secret; a refused link is retried with the fresh one."""
    link = tmp_path / "link" / "url"
    link.parent.mkdir()
    expired = b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"

    def renew(seen: object) -> None:
        link.write_text(srv.url("/fresh.tflite"))

    with ObjectServer(on_request=renew) as srv:
        link.write_text(srv.put("/old.tflite", MODEL, Misbehaviour(statuses=[(403, expired)])))
        srv.put("/fresh.tflite", MODEL)
        run = run_fetch(MODEL_SHA256=MODEL_SHA256, MODEL_URL_FILE=str(link))
        assert run.code == 0, run.stderr
        assert [r.path for r in srv.requests] == ["/old.tflite", "/fresh.tflite"]
        assert "LinkExpired" not in run.message and "new link" in run.stderr


def test_server_errors_are_retried_with_backoff(tmp_path: Path, server: ObjectServer, run_fetch: RunFetch) -> None:
    url = server.put("/m.tflite", MODEL, Misbehaviour(statuses=[(503, b"slow down"), (500, b"oops")]))
    started = time.monotonic()
    run = run_fetch(MODEL_SHA256=MODEL_SHA256, MODEL_URL=url)
    assert run.code == 0 and len(server.requests) == 3
    assert run.stderr.count("retrying in") == 2 and time.monotonic() - started < 20


def test_a_store_that_keeps_failing_gives_up_after_the_attempts(
    tmp_path: Path, server: ObjectServer, run_fetch: RunFetch
) -> None:
    url = server.put("/m.tflite", MODEL, Misbehaviour(statuses=[(500, b"down")] * 10))
    run = run_fetch(MODEL_SHA256=MODEL_SHA256, MODEL_URL=url, MODEL_FETCH_ATTEMPTS="3")
    assert run.code == 11 and run.message.startswith("ModelDownloadFailed: NetworkError: HTTP 500")
    assert len(server.requests) == 3 and "gave up after 3 attempts" in run.message


def test_nothing_listening_is_a_network_error(tmp_path: Path, run_fetch: RunFetch) -> None:
    with ObjectServer() as gone:
        url = gone.url("/m.tflite")
    run = run_fetch(MODEL_SHA256=MODEL_SHA256, MODEL_URL=url, MODEL_FETCH_ATTEMPTS="2")
    assert run.code == 11 and "cannot reach http://127.0.0.1" in run.message


def test_an_object_over_the_size_limit_is_refused_from_its_length(
    tmp_path: Path, server: ObjectServer, run_fetch: RunFetch
) -> None:
    run = run_fetch(MODEL_SHA256=MODEL_SHA256, MODEL_URL=server.put("/m.tflite", MODEL), MODEL_MAX_BYTES="1000000")
    assert run.code == 8 and run.message.startswith("ModelDownloadFailed: SizeLimitExceeded: ")
    assert f"{SIZE} bytes, over MODEL_MAX_BYTES=1000000" in run.message
    assert cache_files(tmp_path) == [f"{MODEL_SHA256}.lock"]


def test_an_object_without_length_is_refused_as_it_streams_past_the_limit(
    tmp_path: Path, server: ObjectServer, run_fetch: RunFetch
) -> None:
    url = server.put("/m.tflite", MODEL, Misbehaviour(chunked=True))
    run = run_fetch(MODEL_SHA256=MODEL_SHA256, MODEL_URL=url, MODEL_MAX_BYTES="1000000")
    assert run.code == 8 and "streams past MODEL_MAX_BYTES=1000000" in run.message
    assert cache_files(tmp_path) == [f"{MODEL_SHA256}.lock"]


def test_a_chunked_answer_within_the_limit_is_accepted(
    tmp_path: Path, server: ObjectServer, run_fetch: RunFetch
) -> None:
    run = run_fetch(MODEL_SHA256=MODEL_SHA256, MODEL_URL=server.put("/m.tflite", MODEL, Misbehaviour(chunked=True)))
    assert run.code == 0 and cached(tmp_path).read_bytes() == MODEL.read_bytes()


def test_the_auth_header_file_is_sent_and_never_shown(
    tmp_path: Path, server: ObjectServer, run_fetch: RunFetch
) -> None:
    headers = tmp_path / "headers"
    headers.write_text("# from the model's auth Secret\nAuthorization: Bearer t0ken\n")
    run = run_fetch(MODEL_SHA256="cd" * 32, MODEL_URL=server.put("/m.tflite", MODEL), MODEL_HEADERS_FILE=str(headers))
    assert run.code == 4  # the wrong sha256 makes it fail: the failure must not show the header either
    assert server.requests[0].headers["Authorization"] == "Bearer t0ken"
    assert "t0ken" not in run.message + run.stderr


def test_a_bad_header_line_is_invalid_configuration_without_showing_it(
    tmp_path: Path, server: ObjectServer, run_fetch: RunFetch
) -> None:
    headers = tmp_path / "headers"
    headers.write_text("Bearer t0ken\n")
    run = run_fetch(MODEL_SHA256=MODEL_SHA256, MODEL_URL=server.url("/m"), MODEL_HEADERS_FILE=str(headers))
    assert run.code == 2 and "line 1 is not `Name: value`" in run.message and "t0ken" not in run.message
    assert server.requests == []


def test_auth_headers_are_not_sent_to_another_host_after_a_redirect(
    tmp_path: Path, server: ObjectServer, run_fetch: RunFetch
) -> None:
    headers = tmp_path / "headers"
    headers.write_text("Authorization: Bearer t0ken\n")
    with ObjectServer() as other:
        target = other.put("/m.tflite", MODEL).replace("127.0.0.1", "localhost")
        url = server.put("/m.tflite", b"", Misbehaviour(redirect_to=target))
        run = run_fetch(MODEL_SHA256=MODEL_SHA256, MODEL_URL=url, MODEL_HEADERS_FILE=str(headers))
        assert run.code == 0, run.stderr
        assert server.requests[0].headers["Authorization"] == "Bearer t0ken"
        assert "Authorization" not in other.requests[0].headers


def test_a_redirect_to_anything_but_http_is_not_followed(
    tmp_path: Path, server: ObjectServer, run_fetch: RunFetch
) -> None:
    url = server.put("/m.tflite", b"", Misbehaviour(redirect_to="ftp://127.0.0.1/m.tflite"))
    run = run_fetch(MODEL_SHA256=MODEL_SHA256, MODEL_URL=url)
    assert run.code == 10 and run.message.startswith("ModelDownloadFailed: HttpError: HTTP 302")


def test_no_link_is_a_clear_failure(tmp_path: Path, run_fetch: RunFetch) -> None:
    run = run_fetch(MODEL_SHA256=MODEL_SHA256)
    assert run.code == 3 and run.message == ("ModelDownloadFailed: NoLink: no link: set MODEL_URL_FILE or MODEL_URL")
    missing = run_fetch(MODEL_SHA256=MODEL_SHA256, MODEL_URL_FILE=str(tmp_path / "secret" / "url"))
    assert missing.code == 3 and "is the link Secret mounted?" in missing.message


def test_a_missing_sha256_is_invalid_configuration(tmp_path: Path, run_fetch: RunFetch) -> None:
    run = run_fetch(MODEL_URL="http://127.0.0.1:9/m")
    assert run.code == 2 and run.message.startswith("ModelDownloadFailed: InvalidConfiguration: MODEL_SHA256")
    bad = run_fetch(MODEL_SHA256=MODEL_SHA256, MODEL_FETCH_BACKOFF_MIN_S="5", MODEL_FETCH_BACKOFF_MAX_S="1")
    assert bad.code == 2 and "MODEL_FETCH_BACKOFF_MIN_S must not exceed" in bad.message


def test_an_unusable_cache_folder_is_a_cache_error(tmp_path: Path, server: ObjectServer, run_fetch: RunFetch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    run = run_fetch(MODEL_SHA256=MODEL_SHA256, MODEL_URL=server.url("/m"), MODEL_CACHE_DIR=str(blocker / "cache"))
    assert run.code == 13 and run.message.startswith("ModelDownloadFailed: CacheError: cannot create the cache folder")
    assert server.requests == []


def test_a_lock_held_too_long_is_a_lock_timeout(tmp_path: Path, server: ObjectServer, run_fetch: RunFetch) -> None:
    import fcntl

    folder = tmp_path / "cache" / "sha256"
    folder.mkdir(parents=True)
    with open(folder / f"{MODEL_SHA256}.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        run = run_fetch(MODEL_SHA256=MODEL_SHA256, MODEL_URL=server.put("/m", MODEL), MODEL_FETCH_LOCK_TIMEOUT_S="0.5")
    assert run.code == 12 and run.message.startswith("ModelDownloadFailed: LockTimeout: ")
    assert server.requests == []


def test_the_termination_message_file_is_never_created(tmp_path: Path, server: ObjectServer) -> None:
    env = fetch_env(tmp_path, MODEL_SHA256=MODEL_SHA256, MODEL_URL=server.put("/m", MODEL))
    env["TERMINATION_MESSAGE_PATH"] = str(tmp_path / "absent")
    proc = subprocess.run([sys.executable, "-m", "korall_workloads.fetch"], env=env, capture_output=True, timeout=60)
    assert proc.returncode == 0 and not (tmp_path / "absent").exists()


def test_the_downloader_needs_neither_boto3_nor_any_http_library_beyond_the_standard_one() -> None:
    """The init container gets a link, never credentials: no S3 SDK, and nothing the vision extra lacks."""
    code = (
        "import sys, korall_workloads.fetch.__main__\nprint(' '.join(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    loaded = set(
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    )
    assert "korall_workloads" in loaded
    assert loaded.isdisjoint({"boto3", "botocore", "limits", "kopf", "korall_operator", "httpx", "requests", "cv2"})
