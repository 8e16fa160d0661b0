"""Short-lived S3 GET links for model downloads: the operator signs, the pod only downloads.

S3 credentials stay with the operator (a Secret only it reads). For an InferenceModel with `model.s3` the
operator signs a presigned GET link (SigV4, boto3) valid for `link_ttl_s`, writes it into the model's link
Secret, and re-signs on a timer before it expires; the init container (`python -m korall_workloads.fetch`)
never sees a key. Works with any S3-compatible store: endpoint URL, region and path-style addressing are
settings, and a credentials Secret may override endpoint and region for its models.

Signing is local (no request), so a flapping pod could make the operator sign without end: `LinkIssuer`
limits issuance per model and overall (the `limits` library, a moving window in memory: one operator
process leads at a time under kopf's peering) and counts every outcome in prometheus-client metrics.
`check_object` is the one call that talks to S3: a HEAD with the operator's credentials, so that wrong
credentials or a missing object become a clear condition before any pod is made.

When to sign, and when a link signed before is reused, is the handlers' business (handlers/model_links.py).
"""

from __future__ import annotations

import base64
import binascii
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import boto3
import botocore.config
import botocore.exceptions
from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from prometheus_client import REGISTRY, CollectorRegistry, Counter
from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_SIGV4_TTL_S = 7 * 24 * 3600  # SigV4 query signatures are valid for at most a week

# Keys of a credentials Secret's data (the names the AWS CLI and SDKs use for the same things).
ACCESS_KEY_ID = "AWS_ACCESS_KEY_ID"
SECRET_ACCESS_KEY = "AWS_SECRET_ACCESS_KEY"
SESSION_TOKEN = "AWS_SESSION_TOKEN"  # optional: temporary (STS) credentials
ENDPOINT_URL = "AWS_ENDPOINT_URL"  # optional: overrides PresignSettings.endpoint_url for this Secret's models
REGION = "AWS_REGION"  # optional: overrides PresignSettings.region

_S3_URI = re.compile(r"^s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])/(\S+)$")


class PresignSettings(BaseModel):
    """Signing and rate-limit settings (the lead folds them into OperatorSettings: KORALL_S3_* variables)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    link_ttl_s: int = Field(default=600, ge=1, le=MAX_SIGV4_TTL_S)
    """Lifetime of a presigned link. Short, because whoever holds the link can read the object until then;
    the operator re-signs before it expires (`PresignedLink.renewal_due`)."""

    endpoint_url: str | None = Field(default=None, pattern=r"^https?://\S+$")
    """S3 API endpoint of an S3-compatible store (MinIO, Ceph RGW, R2, ...); None is AWS S3 itself."""

    region: str = Field(default="us-east-1", pattern=r"^[a-z0-9-]{1,32}$")
    """Region in the signature's scope; most S3-compatible stores accept us-east-1."""

    path_style: bool = False
    """Address buckets as `<endpoint>/<bucket>/<key>` instead of `<bucket>.<endpoint>/<key>`: most
    self-hosted stores need it (no wildcard DNS), and bucket names with dots need it under TLS."""

    rate_per_model: str = "6/minute"
    """Most links one model may get in a moving window (`limits` notation: "6/minute", "20 per hour")."""

    rate_overall: str = "120/minute"
    """Most links all models together may get in a moving window."""

    connect_timeout_s: float = Field(default=5.0, gt=0, le=60)
    read_timeout_s: float = Field(default=10.0, gt=0, le=120)
    """Timeouts of `check_object`, the only call that reaches the store; signing makes no request."""

    @field_validator("rate_per_model", "rate_overall")
    @classmethod
    def _parses(cls, value: str) -> str:
        try:
            parse(value)
        except ValueError as exc:
            raise ValueError(f"not a rate limit such as '6/minute': {exc}") from None
        return value


CONFIGURATION_ERRORS: tuple[type[Exception], ...] = (
    botocore.exceptions.ValidationError,  # InvalidRegionError ('Bad Region!'), unknown or conflicting parameters
    botocore.exceptions.InvalidConfigError,
    botocore.exceptions.InvalidEndpointConfigurationError,
    botocore.exceptions.InvalidS3AddressingStyleError,
    botocore.exceptions.InvalidDNSNameError,  # a bucket name virtual-host addressing cannot carry
    botocore.exceptions.NoCredentialsError,
    botocore.exceptions.PartialCredentialsError,
    botocore.exceptions.NoRegionError,
    botocore.exceptions.UnknownSignatureVersionError,
    botocore.exceptions.UnsupportedSignatureVersionError,
    botocore.exceptions.ParamValidationError,
    ValueError,  # boto3 making a client of an endpoint it cannot parse ("Invalid endpoint: ...")
)
"""What botocore raises for a configuration no wait can fix (the credentials Secret's AWS_REGION or
AWS_ENDPOINT_URL, or the operator's S3 settings): S3CredentialsInvalid, never the temporary S3Unreachable."""


class PresignError(Exception):
    """Why no link (or no object check) could be had. `reason` is a CamelCase condition reason.

    `temporary` errors (the store unreachable, the rate limit) are retried after `retry_after_s`; the others
    need a change by a person (a Secret, the spec, the bucket) and become a Degraded condition.
    """

    def __init__(self, reason: str, message: str, *, temporary: bool = False, retry_after_s: float = 0.0) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
        self.temporary = temporary
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class S3Credentials:
    """Credentials read from a Secret, plus the per-Secret endpoint/region overrides. repr hides the keys."""

    access_key_id: str = field(repr=False)
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)
    endpoint_url: str | None = None
    region: str | None = None


@dataclass(frozen=True)
class PresignedLink:
    """A signed GET link and its validity (epoch seconds)."""

    url: str = field(repr=False)  # the query is a bearer credential until it expires: never log it
    issued_at: float
    expires_at: float

    def renewal_due(self, now: float, fraction: float = 0.5) -> bool:
        """True once `fraction` of the lifetime is gone: re-sign then, so the Secret never holds a dead link
        (the kubelet takes up to a minute or so to refresh a mounted Secret)."""
        return now >= self.issued_at + fraction * (self.expires_at - self.issued_at)


@dataclass(frozen=True)
class ObjectInfo:
    size: int
    etag: str | None


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """(bucket, key) of `s3://bucket/key`; InvalidS3Uri otherwise."""
    match = _S3_URI.match(uri)
    if not match:
        raise PresignError("InvalidS3Uri", f"{uri!r} is not s3://<bucket>/<key>")
    return match.group(1), match.group(2)


def credentials_from_secret(name: str, data: Mapping[str, str] | None) -> S3Credentials:
    """S3 credentials from a Secret's `data` (base64 values, as the API returns them).

    Needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY; AWS_SESSION_TOKEN, AWS_ENDPOINT_URL and AWS_REGION are
    optional. A missing or empty key is S3CredentialsMissing, an undecodable one or an endpoint that is no URL
    S3CredentialsInvalid, naming the Secret (`name`: namespace/name) and the key only, never a value.
    """

    def value(key: str) -> str | None:
        raw = (data or {}).get(key)
        if raw is None:
            return None
        try:
            text = base64.b64decode(raw, validate=True).decode("utf-8").strip()
        except (binascii.Error, UnicodeDecodeError):
            raise PresignError("S3CredentialsInvalid", f"Secret {name}: {key} is not base64 of UTF-8 text") from None
        return text or None

    access, secret = value(ACCESS_KEY_ID), value(SECRET_ACCESS_KEY)
    missing = [k for k, v in ((ACCESS_KEY_ID, access), (SECRET_ACCESS_KEY, secret)) if not v]
    if missing or access is None or secret is None:
        raise PresignError("S3CredentialsMissing", f"Secret {name} has no {' and no '.join(missing)}")
    endpoint = value(ENDPOINT_URL)
    if endpoint is not None and not re.match(r"^https?://\S+$", endpoint):
        raise PresignError("S3CredentialsInvalid", f"Secret {name}: {ENDPOINT_URL} is not an http(s) URL")
    return S3Credentials(access, secret, value(SESSION_TOKEN), endpoint, value(REGION))


class LinkMetrics:
    """The issuer's counters; one set per registry (the operator's default registry in production)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.links = Counter(
            "korall_operator_model_links",
            "Presigned model links asked for, by outcome: issued, rate_limited_model, rate_limited_overall, failed.",
            ["outcome"],
            registry=registry,
        )
        self.checks = Counter(
            "korall_operator_s3_object_checks",
            "HEAD checks of model objects, by outcome: ok, not_found, denied, misconfigured, unreachable.",
            ["outcome"],
            registry=registry,
        )


_default_metrics: LinkMetrics | None = None
_default_lock = threading.Lock()


def _metrics_for(registry: CollectorRegistry | None) -> LinkMetrics:
    global _default_metrics
    if registry is not None:
        return LinkMetrics(registry)
    with _default_lock:
        if _default_metrics is None:
            _default_metrics = LinkMetrics(REGISTRY)
        return _default_metrics


class LinkIssuer:
    """Signs model links within the rate limits and checks objects; thread-safe (boto3 clients are).

    `model` identifies the InferenceModel for the per-model limit (e.g. "namespace/name").
    """

    def __init__(
        self,
        settings: PresignSettings,
        *,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.metrics = _metrics_for(registry)
        self._clock = clock
        self._per_model: RateLimitItem = parse(settings.rate_per_model)
        self._overall: RateLimitItem = parse(settings.rate_overall)
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._limit_lock = threading.Lock()
        self._linked: set[str] = set()  # the models this issuer signed for (a few bytes each)
        self._clients: dict[S3Credentials, Any] = {}
        self._clients_lock = threading.Lock()

    # ---------------------------------------------------------------------------------------------- signing

    def issue(self, model: str, s3_uri: str, credentials: S3Credentials) -> PresignedLink:
        """A fresh presigned GET link to `s3_uri`, or PresignError (LinkRateLimited is temporary)."""
        bucket, key = parse_s3_uri(s3_uri)
        client = self._client(credentials)
        self._admit(model)
        now = self._clock()
        try:
            url = client.generate_presigned_url(
                "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=self.settings.link_ttl_s
            )
        except CONFIGURATION_ERRORS as exc:
            self.metrics.links.labels("failed").inc()
            raise _misconfigured(f"cannot sign a link to {s3_uri}", exc) from None
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            self.metrics.links.labels("failed").inc()
            raise PresignError("S3SigningFailed", f"cannot sign a link to {s3_uri}: {exc}") from None
        self.metrics.links.labels("issued").inc()
        return PresignedLink(url=url, issued_at=now, expires_at=now + self.settings.link_ttl_s)

    def _admit(self, model: str) -> None:
        """Take one link from both windows, or refuse without taking any (test both, then hit both).

        A model's first link from this issuer is not refused by the overall window (it still counts in it): an
        operator that starts (an upgrade, a restart) signs once for every s3 model it resumes, and with more
        models than the overall rate, the rest were `LinkRateLimited` (Degraded, with a Warning) for a minute.
        What the overall limit is for, a flapping spec or a loop that signs again and again, is limited as before.
        """
        with self._limit_lock:
            first = model not in self._linked
            for item, scope, ids in (
                (self._per_model, "model", ("model", model)),
                (self._overall, "overall", ("overall",)),
            ):
                if scope == "overall" and first:
                    continue
                if not self._limiter.test(item, *ids):
                    self.metrics.links.labels(f"rate_limited_{scope}").inc()
                    reset = self._limiter.get_window_stats(item, *ids).reset_time
                    wait = max(1.0, reset - time.time())
                    limit = self.settings.rate_per_model if scope == "model" else self.settings.rate_overall
                    raise PresignError(
                        "LinkRateLimited",
                        f"no new link for {model}: the {scope} limit of {limit} links is used up; next in {wait:.0f} s",
                        temporary=True,
                        retry_after_s=wait,
                    )
            self._limiter.hit(self._per_model, "model", model)
            self._limiter.hit(self._overall, "overall")
            self._linked.add(model)

    # ---------------------------------------------------------------------------------------------- checking

    def check_object(self, s3_uri: str, credentials: S3Credentials) -> ObjectInfo:
        """HEAD the object with the operator's credentials: its size, or why it cannot be downloaded.

        S3CredentialsInvalid (403: unknown key, bad secret, no permission; or a configuration botocore refuses, such
        as a malformed region), ModelObjectNotFound (404), S3Unreachable (temporary: connection, timeout, 5xx).
        """
        bucket, key = parse_s3_uri(s3_uri)
        try:
            head = self._client(credentials).head_object(Bucket=bucket, Key=key)
        except botocore.exceptions.ClientError as exc:
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
            code = str(exc.response.get("Error", {}).get("Code", status))
            if status in (401, 403):
                self.metrics.checks.labels("denied").inc()
                raise PresignError(
                    "S3CredentialsInvalid", f"the store refused the operator's credentials for {s3_uri} ({code})"
                ) from None
            if status == 404:
                self.metrics.checks.labels("not_found").inc()
                raise PresignError("ModelObjectNotFound", f"{s3_uri} does not exist ({code})") from None
            self.metrics.checks.labels("unreachable").inc()
            raise PresignError("S3Unreachable", f"HEAD {s3_uri}: {code}", temporary=True, retry_after_s=30) from None
        except CONFIGURATION_ERRORS as exc:
            self.metrics.checks.labels("misconfigured").inc()
            raise _misconfigured(f"HEAD {s3_uri}", exc) from None
        except botocore.exceptions.BotoCoreError as exc:
            self.metrics.checks.labels("unreachable").inc()
            raise PresignError("S3Unreachable", f"HEAD {s3_uri}: {exc}", temporary=True, retry_after_s=30) from None
        self.metrics.checks.labels("ok").inc()
        return ObjectInfo(size=int(head.get("ContentLength", 0)), etag=head.get("ETag"))

    # ---------------------------------------------------------------------------------------------- clients

    def _client(self, credentials: S3Credentials) -> Any:
        """One boto3 S3 client per credentials (creating one costs tens of milliseconds). A region or endpoint
        boto3 refuses is S3CredentialsInvalid."""
        with self._clients_lock:
            client = self._clients.get(credentials)
            if client is None:
                if len(self._clients) >= 64:  # Secrets rotate: never grow without bound
                    self._clients.clear()
                try:
                    client = self._new_client(credentials)
                except CONFIGURATION_ERRORS as exc:
                    raise _misconfigured("no S3 client", exc) from None
                self._clients[credentials] = client
            return client

    def _new_client(self, credentials: S3Credentials) -> Any:
        s = self.settings
        style: Literal["path", "virtual"] = "path" if s.path_style else "virtual"
        session = boto3.session.Session(
            aws_access_key_id=credentials.access_key_id,
            aws_secret_access_key=credentials.secret_access_key,
            aws_session_token=credentials.session_token,
        )
        return session.client(
            "s3",
            endpoint_url=credentials.endpoint_url or s.endpoint_url,
            region_name=credentials.region or s.region,
            config=botocore.config.Config(
                signature_version="s3v4",
                s3={"addressing_style": style},
                connect_timeout=s.connect_timeout_s,
                read_timeout=s.read_timeout_s,
                retries={"max_attempts": 2, "mode": "standard"},
            ),
        )


def _misconfigured(what: str, exc: Exception) -> PresignError:
    return PresignError(
        "S3CredentialsInvalid",
        f"{what}: {exc} (check AWS_REGION and AWS_ENDPOINT_URL of the credentials Secret, and the operator's S3 "
        "settings)",
    )
