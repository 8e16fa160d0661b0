"""Presigned links for `model.s3` InferenceModels: signed by the operator, re-signed before they expire.

The reconcile handler calls `ensure_link` before it applies the Deployment (so the pod finds its link Secret):
it reads the credentials Secret in the operator's own namespace (the only Secret the operator reads), checks the
object exists (a HEAD: wrong credentials or a missing object become a clear condition before any pod is made),
and writes a GET link into the model's link Secret: the link it signed last for the same source while more than
half its lifetime is left (`IssuedLinks`), else a new one. One task for the operator (`keep_links_fresh`) signs
each link again once half its lifetime is gone (`RENEW_AT`, the same rule): a pod that restarts, or is
rescheduled an hour later, reads a valid link. Signing is rate-limited per model and overall (presign.LinkIssuer,
`limits`); a reused link costs none of it, so a burst of reconciles of one model is never `LinkRateLimited`.

boto3 is imported on the first s3 model only (presign.py): an operator without S3 models does not pay its
memory (about 40 MB).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import fnmatch
import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import aiohttp
import kopf

from korall_operator.catalog import ModelRef, applied_spec
from korall_operator.handlers._common import API, INFERENCE_MODELS, State, transient
from korall_operator.handlers._status_writes import write_status
from korall_operator.handlers.indexes import Indexes
from korall_operator.k8s import ApiError
from korall_operator.link_reuse import RENEW_AT, IssuedLinks, LinkSource
from korall_operator.manifests import (
    LINK_CREDENTIALS_ANNOTATION,
    LINK_EXPIRES_ANNOTATION,
    LINK_KEY,
    LINK_OBJECT_ANNOTATION,
    link_secret_name,
    owner_reference,
    workload_labels,
)
from korall_operator.specs import InferenceModelSpec, SpecError, parse_inference_model

if TYPE_CHECKING:
    from korall_operator.presign import LinkIssuer, S3Credentials

logger = logging.getLogger("korall.links")
ALLOWED_KEY = "KORALL_S3_ALLOWED"
"""Optional key of a credentials Secret: comma-separated `s3://bucket/prefix*` patterns its models may use (whoever
may create an InferenceModel may otherwise have any object those credentials reach downloaded)."""


SECRET_FAILURES = frozenset({"S3CredentialsMissing", "S3CredentialsInvalid"})
"""Failures a fix of the credentials Secret (or of the store's permissions) clears. The operator does not watch
Secrets, so these are retried every `link_retry_s`, like a store that is unreachable."""


class LinkUnavailable(Exception):
    """No link for now, for a reason time may fix (rate limit, store unreachable), or a fix of the credentials
    Secret, which only trying again notices (SECRET_FAILURES)."""

    def __init__(self, failure: SpecError, retry_after_s: float) -> None:
        super().__init__(failure.message)
        self.failure = failure
        self.retry_after_s = retry_after_s


def link_lock(korall: State, namespace: str, name: str) -> contextlib.AbstractAsyncContextManager[None]:
    """Held by a model's reconcile and by a renewal of its link: they never overlap. A renewal that read the model
    before its spec moved to another object would otherwise write the old object's link over the new one, and the
    pods of the new template would fetch the old model until the next renewal."""
    return korall.writers.exclusive(("ModelLink", namespace, name))


def issuer(korall: State) -> LinkIssuer:
    """The operator's one LinkIssuer (its rate limits are per process), made on first use."""
    if korall.link_issuer is None:
        from korall_operator.presign import LinkIssuer, PresignSettings

        s = korall.settings
        korall.link_issuer = LinkIssuer(
            PresignSettings(
                link_ttl_s=s.link_ttl_s,
                endpoint_url=s.s3_endpoint_url,
                region=s.s3_region,
                path_style=s.s3_path_style,
                rate_per_model=s.link_rate_per_model,
                rate_overall=s.link_rate_overall,
            )
        )
    return korall.link_issuer


def issued_links(korall: State) -> IssuedLinks:
    """The operator's links signed last (link_reuse.py), made on first use."""
    if korall.issued_links is None:
        korall.issued_links = IssuedLinks()
    return korall.issued_links


async def credentials(korall: State, model: InferenceModelSpec) -> tuple[S3Credentials, list[str], str]:
    """The model's S3 credentials from the Secret in the operator's namespace, its allowed patterns, and the
    Secret's namespace/name."""
    from korall_operator.presign import PresignError, credentials_from_secret

    name = model.model.s3_credentials or korall.settings.s3_credentials_secret
    where = f"{korall.settings.namespace}/{name}"
    secret = await korall.kube.get("v1", "secrets", korall.settings.namespace, name)
    if secret is None:
        message = f"Secret {where} does not exist: create it (docs/model-delivery.md)"
        raise LinkUnavailable(SpecError("S3CredentialsMissing", message), korall.settings.link_retry_s)
    data = secret.get("data") or {}
    try:
        creds = credentials_from_secret(where, data)
    except PresignError as e:  # keys missing or unusable: tried again until the Secret is fixed
        raise LinkUnavailable(SpecError(e.reason, e.message), korall.settings.link_retry_s) from e
    allowed = base64.b64decode(data[ALLOWED_KEY]).decode() if ALLOWED_KEY in data else ""
    return creds, [p.strip() for p in allowed.split(",") if p.strip()], where


async def ensure_link(
    korall: State, body: Mapping[str, Any], model: InferenceModelSpec, *, check: bool, reuse: bool
) -> dict:
    """Write an s3 model's link into its Secret; returns the status fields: `modelLink`, None for a model that is
    not in S3 (one that left S3 loses its link in the status, and the renewal task stops looking at it).

    `check`: HEAD the object first. A reconcile does, also when it reuses the link: what people expect of
    `kubectl get im` is that a deleted object or refused keys show as Degraded at the model's next reconcile, not
    only at the next signing (up to half the link's lifetime later) or when a pod fails to download. A HEAD is one
    S3 request, not a signing: it costs no rate-limit budget. A renewal does not: it only replaces a link that its
    reconcile checked. A store that does not answer the HEAD (S3Unreachable) blocks the reconcile only when there
    is no fresh link to reuse.

    `reuse`: keep the link signed last for the same `LinkSource` while more than `RENEW_AT` of its lifetime is left
    (a reconcile); the renewal task asks at `RENEW_AT` and signs anew. A changed spec (object, credentials Secret)
    or rotated keys in the Secret (read at every reconcile) are another source: signed anew at once. Keys rotated
    while no reconcile runs are used from the next renewal on, at most half a lifetime later (the operator does
    not watch Secrets); a link signed with the old keys stays valid until it expires unless those keys are revoked,
    in which case the downloader retries as soon as the Secret holds the new link.
    The link Secret is applied either way: one its owner deleted or changed by hand is put back.

    Raises SpecError (Degraded until the spec changes), LinkUnavailable (retried: time or a fix of the credentials
    Secret may clear it), ApiError.
    """
    meta = body["metadata"]
    key = (meta["namespace"], meta["name"])
    links = issued_links(korall)
    uri = model.model.s3
    if uri is None:
        links.forget(key)
        return {"modelLink": None}
    creds, where = await _allowed_credentials(korall, model, uri)
    source, now = LinkSource(uri, where, creds), time.time()
    link = links.reusable(key, meta["uid"], source, now) if reuse else None
    if check:
        try:
            await _presign(korall, lambda s: s.check_object(uri, creds))
        except LinkUnavailable as e:
            # A store that does not answer for a moment says nothing about the object: with a fresh link for it,
            # an unrelated edit (a threshold) rolls out instead of waiting for the store. Refused keys still stop.
            if link is None or e.failure.reason != "S3Unreachable":
                raise
            logger.warning(f"{key[0]}/{key[1]}: {e.failure.message}; the fresh link of {uri} is kept meanwhile")
    if link is None:
        link = await _presign(korall, lambda s: s.issue(f"{key[0]}/{key[1]}", uri, creds))
        links.remember(key, meta["uid"], source, link, now)
    annotations = {
        LINK_OBJECT_ANNOTATION: uri,
        LINK_CREDENTIALS_ANNOTATION: where,
        LINK_EXPIRES_ANNOTATION: _iso(link.expires_at),
    }
    secret = link_secret(
        body, link_secret_name(meta["name"]), {LINK_KEY: link.url}, korall.settings.vision_image, annotations
    )
    await korall.kube.apply(secret)
    return {"modelLink": {"issuedAt": _iso(link.issued_at), "expiresAt": _iso(link.expires_at)}}


async def signed_link(
    korall: State, body: Mapping[str, Any], model: InferenceModelSpec, *, check: bool, purpose: str = ""
) -> Any:
    """A new presigned link (presign.Link) of an s3 model, or None for a model that is not in S3; see ensure_link.
    `purpose` (a validation Job) counts its links apart from the serving model's in the per-model rate limit."""
    uri = model.model.s3
    if uri is None:
        return None
    meta = body["metadata"]
    creds, _ = await _allowed_credentials(korall, model, uri)
    if check:
        await _presign(korall, lambda s: s.check_object(uri, creds))
    key = f"{meta['namespace']}/{meta['name']}" + (f"/{purpose}" if purpose else "")
    return await _presign(korall, lambda s: s.issue(key, uri, creds))


async def _allowed_credentials(korall: State, model: InferenceModelSpec, uri: str) -> tuple[S3Credentials, str]:
    """The model's credentials and their Secret's namespace/name; S3ObjectNotAllowed when the Secret's
    KORALL_S3_ALLOWED patterns leave `uri` out."""
    creds, allowed, where = await credentials(korall, model)
    if allowed and not any(fnmatch.fnmatchcase(uri, pattern) for pattern in allowed):
        raise SpecError(
            "S3ObjectNotAllowed",
            f"{uri} is outside what its credentials Secret allows ({ALLOWED_KEY}: {', '.join(allowed)})",
        )
    return creds, where


async def _presign(korall: State, call: Callable[[LinkIssuer], Any]) -> Any:
    """`call` (a HEAD or a signing) on a worker thread, its PresignError as SpecError or LinkUnavailable."""
    from korall_operator.presign import PresignError

    links = issuer(korall)
    try:
        return await asyncio.to_thread(call, links)
    except PresignError as e:
        failure = SpecError(e.reason, e.message)
        if e.temporary:
            raise LinkUnavailable(failure, e.retry_after_s or korall.settings.link_retry_s) from e
        if e.reason in SECRET_FAILURES:  # refused keys, a region or endpoint boto3 refuses: the Secret may be fixed
            raise LinkUnavailable(failure, korall.settings.link_retry_s) from e
        raise failure from e


def link_secret(
    owner: Mapping[str, Any],
    name: str,
    links: Mapping[str, str],
    image: str,
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A Secret holding presigned links under the given keys, owned by `owner` (deleted with it). `annotations` say
    what a person reading the Secret cannot see in a link without decoding it (the operator never reads them)."""
    meta = owner["metadata"]
    parent = meta.get("labels", {}).get("app.kubernetes.io/instance") if owner.get("kind") == "Job" else meta["name"]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "labels": workload_labels(str(parent or meta["name"]), "vision", image, {}),
            **({"annotations": dict(annotations)} if annotations else {}),
            "ownerReferences": [owner_reference(owner)],
        },
        "type": "Opaque",
        "data": {key: base64.b64encode(url.encode()).decode() for key, url in links.items()},
    }


def _iso(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _epoch(text: str | None) -> float | None:
    """A status time stamp as epoch seconds; None when absent or not one (the status is not ours alone)."""
    try:
        return datetime.datetime.strptime(str(text), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC).timestamp()
    except ValueError:
        return None


def renewal_in(status: Mapping[str, Any], now: float) -> float | None:
    """Seconds until the link should be signed again (`RENEW_AT` of its lifetime), or None when there is no link."""
    link = status.get("modelLink") or {}
    issued, expires = _epoch(link.get("issuedAt")), _epoch(link.get("expiresAt"))
    if issued is None or expires is None:
        return None
    return issued + (expires - issued) * RENEW_AT - now


def _applied(spec: Mapping[str, Any], status: Mapping[str, Any]) -> dict[str, Any]:
    """The spec the Deployment was built from: the catalog's serving model's fields over the spec, when a newer
    model waits (its link must stay the serving model's; catalog/gate.py)."""
    serving = ModelRef.from_status((status.get("catalog") or {}).get("serving"))
    return applied_spec(spec, serving) if serving is not None else dict(spec)


async def keep_links_fresh(korall: State, indexes: Indexes) -> None:
    """Sign every s3 model's link again at half its lifetime, for as long as the operator runs.

    One task for the whole operator, over the index's view of the models (status.modelLink), started at startup
    like the resync loop. A kopf daemon per s3 model did this before: kopf then keeps the whole body of every
    InferenceModel in memory, s3 or not (about 40 KB each: 45 MB of 160 with 1000 models).
    """
    not_before: dict[tuple[str, str], float] = {}  # after a failure, or a renewal the index has not seen yet
    while True:
        tick = min(korall.settings.link_retry_s, korall.settings.link_ttl_s / 4)
        await asyncio.sleep(tick)
        try:
            await _renew_due(korall, indexes, not_before, time.time())
        except asyncio.CancelledError:
            raise
        except Exception:  # never let one bad round end the renewals (the pods' links would then expire)
            logger.exception("model link renewal round failed; the next round tries again")


async def _renew_due(korall: State, indexes: Indexes, not_before: dict[tuple[str, str], float], now: float) -> None:
    """One round of keep_links_fresh: sign again every link that is due and not held back by `not_before`."""
    present: set[tuple[str, str]] = set()
    for view in [v for store in indexes.models.values() for v in store]:
        key = (view.namespace, view.name)
        present.add(key)
        due = renewal_in(view.status, now)
        if due is None or due > 0 or view.deleting or not_before.get(key, 0.0) > now:
            continue
        not_before[key] = now + await _renew(korall, view.namespace, view.name, now)
    for gone in not_before.keys() - present:
        del not_before[gone]


async def _renew(korall: State, namespace: str, name: str, now: float) -> float:
    """Sign one model's link again (from a fresh read); returns how long to leave it alone."""
    retry = korall.settings.link_retry_s
    body: dict[str, Any] | None = None
    try:
        async with link_lock(korall, namespace, name):  # read, signed and written while no reconcile of it runs
            body = await korall.kube.get(API, INFERENCE_MODELS, namespace, name)
            status = (body or {}).get("status") or {}
            if body is None or body["metadata"].get("deletionTimestamp") or (renewal_in(status, now) or 0.0) > 0:
                return 0.0  # gone, going, or renewed meanwhile (the index lagged, or a reconcile signed it)
            model = parse_inference_model(_applied(body.get("spec") or {}, status))
            fields = await ensure_link(korall, body, model, check=False, reuse=False)
            if fields["modelLink"] is None:
                return 0.0  # no longer in S3; the reconcile has taken its link away
            await _write_link_status(korall, body, fields)
        logger.info(f"InferenceModel {namespace}/{name}: model link signed again, valid until "
                    f"{fields['modelLink']['expiresAt']}")  # fmt: skip
        return retry  # the index sees the new link within a moment
    except LinkUnavailable as e:
        why, retry = f"{e.failure.reason}: {e}", e.retry_after_s
    except (
        SpecError,
        ApiError,
        aiohttp.ClientError,
        TimeoutError,
        kopf.TemporaryError,
    ) as e:  # the reconcile reports the spec
        why = str(e)
    except Exception as e:  # never let one model end the loop
        logger.exception(f"InferenceModel {namespace}/{name}: model link not signed again")
        why = f"unexpected {type(e).__name__}: {e}"
    message = f"model link not signed again: {why}; retrying in {retry:.0f} s"
    logger.warning(f"InferenceModel {namespace}/{name}: {message}")
    if body is not None:
        with contextlib.suppress(ApiError, aiohttp.ClientError, TimeoutError):  # the API server may be why
            await korall.events.record(body, "Warning", "LinkNotRenewed", message)
    return retry


async def _write_link_status(korall: State, body: Mapping[str, Any], fields: dict[str, Any]) -> None:
    meta = body["metadata"]

    async def status_of(_: Mapping[str, Any]) -> dict[str, Any]:
        return fields

    try:
        async with korall.writers.exclusive(("InferenceModel", meta["namespace"], meta["name"])):
            await write_status(
                korall.kube, API, INFERENCE_MODELS, meta["namespace"], meta["name"], meta["uid"], status_of
            )
    except ApiError as e:
        raise transient(e, "writing the link's status") from e
