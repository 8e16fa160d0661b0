"""Presigned model links (korall_operator.presign) against a real S3 API, downloaded by the real downloader.

moto's S3 server (tests/workloads/s3_servers.py) stands in for the store: boto3 signs real SigV4 links for
it, and `python -m korall_workloads.fetch` (the init container's code, as a process) downloads through them.
moto serves a presigned link forever, so the expiry tests go through `ExpiringLinkFront`, a thin proxy in
front of moto that refuses a link past X-Amz-Date + X-Amz-Expires with S3's 403 "Request has expired".
moto verifies header-signed requests only when its IAM auth is switched on, which the credentials test does.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
from korall_contract import FetchEnv, env_names
from korall_operator.presign import (
    LinkIssuer,
    PresignError,
    PresignSettings,
    S3Credentials,
    credentials_from_secret,
    parse_s3_uri,
)
from prometheus_client import CollectorRegistry
from pydantic import ValidationError
from s3_servers import ExpiringLinkFront, moto_s3

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "mobilenet_ssd_v2_coco_quant_postprocess.tflite"
MODEL_SHA256 = hashlib.sha256(MODEL.read_bytes()).hexdigest()
KEY = "detectors/ssd/mobilenet_v2.tflite"
CREDS = S3Credentials("AKIAKORALLTEST000000", "test-secret-key")


@pytest.fixture(scope="module")
def s3() -> Iterator[tuple[str, str]]:
    """(endpoint, bucket) of a moto S3 server holding the real model at KEY."""
    with moto_s3() as endpoint:
        bucket = f"models-{secrets.token_hex(4)}"
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id=CREDS.access_key_id,
            aws_secret_access_key=CREDS.secret_access_key,
        )
        client.create_bucket(Bucket=bucket)
        client.put_object(Bucket=bucket, Key=KEY, Body=MODEL.read_bytes())
        yield endpoint, bucket


def issuer(endpoint: str, **settings: object) -> LinkIssuer:
    return LinkIssuer(
        PresignSettings.model_validate({"endpoint_url": endpoint, "path_style": True, **settings}),
        registry=CollectorRegistry(),
    )


def fetch(tmp_path: Path, link: str, sha256: str = MODEL_SHA256) -> tuple[int, str]:
    """Run the downloader as the init container would: the link in a file (the mounted link Secret)."""
    link_file = tmp_path / "link" / "url"
    link_file.parent.mkdir(exist_ok=True)
    link_file.write_text(link)
    termination = tmp_path / "termination-log"
    termination.write_text("")
    env = {k: v for k, v in os.environ.items() if k not in env_names(FetchEnv)}
    env.update(
        {
            FetchEnv.MODEL_SHA256: sha256,
            FetchEnv.MODEL_URL_FILE: str(link_file),
            FetchEnv.MODEL_CACHE_DIR: str(tmp_path / "cache"),
            FetchEnv.TERMINATION_MESSAGE_PATH: str(termination),
        }
    )
    proc = subprocess.run([sys.executable, "-m", "korall_workloads.fetch"], env=env, capture_output=True, timeout=60)
    return proc.returncode, termination.read_text().strip()


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# ---------------------------------------------------------------------------------------------- settings, input


def test_settings_default_to_ten_minute_links_and_refuse_nonsense() -> None:
    s = PresignSettings()
    assert (s.link_ttl_s, s.region, s.path_style, s.endpoint_url) == (600, "us-east-1", False, None)
    with pytest.raises(ValidationError, match="link_ttl_s"):
        PresignSettings(link_ttl_s=8 * 24 * 3600)  # SigV4 links live a week at most
    with pytest.raises(ValidationError, match="not a rate limit"):
        PresignSettings(rate_per_model="often")


def test_s3_uris_split_into_bucket_and_key() -> None:
    assert parse_s3_uri("s3://models/a/b.tflite") == ("models", "a/b.tflite")
    with pytest.raises(PresignError, match="InvalidS3Uri"):
        parse_s3_uri("https://models/a.tflite")


def test_credentials_come_from_the_secret_data_and_never_show_in_repr() -> None:
    creds = credentials_from_secret(
        "s3-creds",
        {
            "AWS_ACCESS_KEY_ID": b64("AKIA123"),
            "AWS_SECRET_ACCESS_KEY": b64("s3cr3t\n"),
            "AWS_SESSION_TOKEN": b64("tok"),
            "AWS_ENDPOINT_URL": b64("https://minio.example:9000"),
        },
    )
    assert (creds.access_key_id, creds.secret_access_key, creds.session_token) == ("AKIA123", "s3cr3t", "tok")
    assert creds.endpoint_url == "https://minio.example:9000" and creds.region is None
    assert "s3cr3t" not in repr(creds) and "AKIA123" not in repr(creds)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (None, "has no AWS_ACCESS_KEY_ID and no AWS_SECRET_ACCESS_KEY"),
        ({"AWS_ACCESS_KEY_ID": b64("AKIA123")}, "has no AWS_SECRET_ACCESS_KEY"),
        ({"AWS_ACCESS_KEY_ID": b64("AKIA123"), "AWS_SECRET_ACCESS_KEY": b64("  ")}, "has no AWS_SECRET_ACCESS_KEY"),
    ],
)
def test_a_secret_without_usable_credentials_is_refused_by_name(data: dict[str, str] | None, expected: str) -> None:
    with pytest.raises(PresignError) as err:
        credentials_from_secret("s3-creds", data)
    assert err.value.reason == "S3CredentialsMissing" and not err.value.temporary
    assert err.value.message == f"Secret s3-creds {expected}" or expected in err.value.message


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"AWS_ACCESS_KEY_ID": "not base64!", "AWS_SECRET_ACCESS_KEY": b64("x")}, "AWS_ACCESS_KEY_ID is not base64"),
        (
            {"AWS_ACCESS_KEY_ID": b64("k"), "AWS_SECRET_ACCESS_KEY": b64("s"), "AWS_ENDPOINT_URL": b64("not a url")},
            "AWS_ENDPOINT_URL is not an http(s) URL",
        ),
    ],
)
def test_a_secret_with_unusable_content_is_invalid_not_missing(data: dict[str, str], expected: str) -> None:
    with pytest.raises(PresignError) as err:
        credentials_from_secret("korall-system/s3-creds", data)
    assert err.value.reason == "S3CredentialsInvalid" and not err.value.temporary
    assert err.value.message == f"Secret korall-system/s3-creds: {expected}" or expected in err.value.message
    assert "not a url" not in err.value.message  # the key is named, its value never


# ---------------------------------------------------------------------------------------------- links


def test_a_presigned_link_downloads_the_model_through_the_real_downloader(s3: tuple[str, str], tmp_path: Path) -> None:
    endpoint, bucket = s3
    link = issuer(endpoint).issue("ns/ssd", f"s3://{bucket}/{KEY}", CREDS)
    parts = urlsplit(link.url)
    query = parse_qs(parts.query)
    assert parts.path == f"/{bucket}/{KEY}"  # path-style addressing
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"] and query["X-Amz-Expires"] == ["600"]
    assert (
        query["X-Amz-Credential"][0].startswith(f"{CREDS.access_key_id}/")
        and "/us-east-1/s3/" in query["X-Amz-Credential"][0]
    )
    assert link.expires_at - link.issued_at == 600
    code, message = fetch(tmp_path, link.url)
    assert code == 0, message
    assert (tmp_path / "cache" / "sha256" / MODEL_SHA256).read_bytes() == MODEL.read_bytes()
    assert CREDS.secret_access_key not in link.url and "X-Amz-Signature" not in message


def test_virtual_hosted_addressing_puts_the_bucket_in_the_host() -> None:
    link = LinkIssuer(PresignSettings(endpoint_url="https://s3.store.example"), registry=CollectorRegistry()).issue(
        "ns/ssd", "s3://models/a.tflite", CREDS
    )
    assert urlsplit(link.url).netloc == "models.s3.store.example" and urlsplit(link.url).path == "/a.tflite"


def test_endpoint_and_region_from_the_secret_override_the_settings() -> None:
    creds = S3Credentials("AKIA1", "k", endpoint_url="https://minio.lan:9000", region="eu-central-1")
    link = LinkIssuer(PresignSettings(path_style=True), registry=CollectorRegistry()).issue(
        "ns/a", "s3://models/a", creds
    )
    assert link.url.startswith("https://minio.lan:9000/models/a?")
    assert "/eu-central-1/s3/aws4_request" in parse_qs(urlsplit(link.url).query)["X-Amz-Credential"][0]


def test_an_expired_link_is_refused_and_a_fresh_signature_works(s3: tuple[str, str], tmp_path: Path) -> None:
    """Signed with a 3 s lifetime, used 4 s later: S3's 403 "Request has expired" (from ExpiringLinkFront,
    as moto checks no expiry) ends the download as LinkExpired. What the operator's timer does next, re-sign,
    gives a different link that downloads (within its own 3 s: X-Amz-Date has whole seconds, so at least 2)."""
    endpoint, bucket = s3
    with ExpiringLinkFront(endpoint) as front:
        links = issuer(front.endpoint, link_ttl_s=3)
        old = links.issue("ns/ssd", f"s3://{bucket}/{KEY}", CREDS)
        assert not old.renewal_due(old.issued_at + 1.4) and old.renewal_due(old.issued_at + 1.5)
        time.sleep(4.1)
        code, message = fetch(tmp_path, old.url)
        assert code == 5 and message.startswith("ModelDownloadFailed: LinkExpired: ")
        assert "Request has expired" in message and front.refused == 1
        assert not (tmp_path / "cache" / "sha256" / MODEL_SHA256).exists()

        fresh = links.issue("ns/ssd", f"s3://{bucket}/{KEY}", CREDS)
        assert fresh.url != old.url and fresh.issued_at > old.issued_at
        code, message = fetch(tmp_path, fresh.url)
        assert code == 0, message
        assert front.forwarded == 1


def test_a_link_to_a_missing_object_is_not_found(s3: tuple[str, str], tmp_path: Path) -> None:
    endpoint, bucket = s3
    links = issuer(endpoint)
    with pytest.raises(PresignError) as err:
        links.check_object(f"s3://{bucket}/no/such.tflite", CREDS)
    assert err.value.reason == "ModelObjectNotFound" and not err.value.temporary
    code, message = fetch(tmp_path, links.issue("ns/x", f"s3://{bucket}/no/such.tflite", CREDS).url)
    assert code == 7 and message.startswith("ModelDownloadFailed: NotFound: ") and "NoSuchKey" in message


def test_check_object_reports_the_size_with_the_right_credentials_and_refuses_wrong_ones(
    s3: tuple[str, str],
) -> None:
    """moto checks header signatures against its IAM users only with auth switched on (for this test alone)."""
    from moto import settings as moto_settings

    endpoint, bucket = s3
    iam = boto3.client(
        "iam", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="a", aws_secret_access_key="b"
    )
    user = f"korall-operator-{secrets.token_hex(3)}"
    iam.create_user(UserName=user)
    allow = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
    iam.put_user_policy(UserName=user, PolicyName="read-models", PolicyDocument=json.dumps(allow))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    good = S3Credentials(key["AccessKeyId"], key["SecretAccessKey"])
    links = issuer(endpoint)
    before = moto_settings.INITIAL_NO_AUTH_ACTION_COUNT
    moto_settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
    try:
        assert links.check_object(f"s3://{bucket}/{KEY}", good).size == MODEL.stat().st_size
        for wrong in (S3Credentials(good.access_key_id, "not-the-secret"), S3Credentials("AKIANOSUCHKEY0000000", "x")):
            with pytest.raises(PresignError) as err:
                links.check_object(f"s3://{bucket}/{KEY}", wrong)
            assert err.value.reason == "S3CredentialsInvalid" and not err.value.temporary
    finally:
        moto_settings.INITIAL_NO_AUTH_ACTION_COUNT = before
    checks = links.metrics.checks
    assert checks.labels("ok")._value.get() == 1 and checks.labels("denied")._value.get() == 2


@pytest.mark.parametrize("call", ["check_object", "issue"])
def test_a_region_botocore_refuses_is_a_configuration_error_not_an_unreachable_store(
    s3: tuple[str, str], call: str
) -> None:
    """InvalidRegionError is a BotoCoreError like a connection error, but no wait fixes it: S3CredentialsInvalid,
    naming the region, never the temporary S3Unreachable (retried every 30 s with a Warning each time)."""
    endpoint, bucket = s3
    links = issuer(endpoint)
    bad = S3Credentials(CREDS.access_key_id, CREDS.secret_access_key, region="Bad Region!")
    uri = f"s3://{bucket}/{KEY}"
    with pytest.raises(PresignError) as err:
        links.check_object(uri, bad) if call == "check_object" else links.issue("ns/m", uri, bad)
    assert err.value.reason == "S3CredentialsInvalid" and not err.value.temporary, err.value
    assert "Bad Region!" in err.value.message and "AWS_REGION" in err.value.message
    assert links.check_object(uri, CREDS).size == MODEL.stat().st_size  # the same issuer, a good Secret: fine


def test_an_unreachable_store_is_a_temporary_error() -> None:
    from s3_servers import free_port

    links = issuer(f"http://127.0.0.1:{free_port()}", connect_timeout_s=1)
    with pytest.raises(PresignError) as err:
        links.check_object("s3://models/a.tflite", CREDS)
    assert err.value.reason == "S3Unreachable" and err.value.temporary and err.value.retry_after_s > 0


# ---------------------------------------------------------------------------------------------- rate limit


def test_the_rate_limit_refuses_a_burst_per_model_and_overall_and_counts_it() -> None:
    registry = CollectorRegistry()
    links = LinkIssuer(
        PresignSettings(endpoint_url="http://127.0.0.1:9", rate_per_model="3/minute", rate_overall="5/minute"),
        registry=registry,
    )

    def burst(model: str, n: int) -> list[str]:
        out = []
        for _ in range(n):
            try:
                links.issue(model, "s3://models/a.tflite", CREDS)
                out.append("ok")
            except PresignError as exc:
                assert exc.reason == "LinkRateLimited" and exc.temporary and 1 <= exc.retry_after_s <= 60
                out.append("limited")
        return out

    assert burst("ns/flapping", 5) == ["ok", "ok", "ok", "limited", "limited"]
    assert burst("ns/other", 3) == ["ok", "ok", "limited"]  # its own 3, but only 2 left overall

    def count(outcome: str) -> float | None:
        return registry.get_sample_value("korall_operator_model_links_total", {"outcome": outcome})

    assert (count("issued"), count("rate_limited_model"), count("rate_limited_overall")) == (5.0, 2.0, 1.0)


def test_a_models_first_link_is_not_refused_by_the_overall_limit_so_a_restart_signs_every_model_once() -> None:
    """An operator that starts signs once for every s3 model it resumes: with more models than the overall rate,
    the rest were LinkRateLimited for a minute. A model's first link now passes the overall window (and counts in
    it); what comes after is limited as before."""
    registry = CollectorRegistry()
    links = LinkIssuer(
        PresignSettings(endpoint_url="http://127.0.0.1:9", rate_per_model="3/minute", rate_overall="2/minute"),
        registry=registry,
    )
    for n in range(5):  # five models resumed, over the overall rate of two
        links.issue(f"ns/model-{n}", "s3://models/a.tflite", CREDS)
    with pytest.raises(PresignError) as err:  # a second link of one of them: the overall window is full
        links.issue("ns/model-0", "s3://models/a.tflite", CREDS)
    assert err.value.reason == "LinkRateLimited" and "the overall limit of 2/minute" in err.value.message
    assert registry.get_sample_value("korall_operator_model_links_total", {"outcome": "issued"}) == 5.0
    assert registry.get_sample_value("korall_operator_model_links_total", {"outcome": "rate_limited_overall"}) == 1.0
