"""Operator start-up and shutdown: kopf settings, one API client, nothing else.

Settings that matter for a long-running operator (see docs/operator-runtime.md):
- watch timeouts: the server ends every watch after `watch_server_timeout_s` and the client gives up on a silent
  one after `watch_client_timeout_s`, so a watch stalled by a dead connection or a proxy is always renewed;
- progress and diff-base in `kopf.korall.io/` annotations (not `status.kopf`), so the status holds only our fields;
- kopf's log lines never become Events (it would post a new Event for each retry of a temporary error); korall
  posts its own, aggregated (events.py), and says a retried failure once, in a condition and one Warning;
- no finalizers are needed (no delete handlers), so deleting a CR never waits for the operator;
- three background tasks, started here and stopped at cleanup: the resync loop (resync.py), the re-signing of
  s3 models' links (model_links.py) and the alerting (alerting/service.py: alert mails from the resources'
  conditions); and the /metrics endpoint (metrics.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import Any, cast

import kopf
from aiohttp import web
from korall_contract import API_GROUP

from korall_operator import k8s, metrics
from korall_operator.alerting.service import AlertService
from korall_operator.handlers._common import State, load_settings
from korall_operator.handlers.indexes import Indexes, ParentView
from korall_operator.handlers.model_links import keep_links_fresh
from korall_operator.handlers.resync import resync_forever
from korall_operator.k8s import KubeClient
from korall_operator.settings import OperatorSettings

KOPF_PREFIX = f"kopf.{API_GROUP}"
"""kopf's own annotations (progress, diff-base, `kopf-managed`). Not `korall.io/` itself: kopf leaves every
annotation under a prefix it manages out of the diff, and `korall.io/capture-profile-seen` must be seen."""
KORALL_KEYS = f"{API_GROUP}/"
"""The labels and annotations of a CR that its handlers read, and so the only ones in kopf's record of it."""


class LeanDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """kopf's annotation diff-base storage, without deep-copying what it throws away.

    kopf builds an object's essence (spec, labels, annotations) on every watch event of a resource with change
    handlers, by deep-copying the whole body and then dropping its status and most of its metadata. An
    InferenceModel's status (conditions, catalog, validations, history) and managedFields are most of it: that copy
    was a tenth of the operator's CPU on a real cluster. This hands kopf the body without them.

    Of the labels and annotations, only korall's own (`korall.io/...`) are kept: they are the only ones the
    handlers read (a requester, a poke). kopf records the essence in an annotation of the CR, and the API server
    takes at most 256 KB of annotations per object: a CR's other labels and annotations (a team's notes, another
    tool's records; kopf itself leaves out only kubectl's last-applied copy) were recorded a second time, and a
    150 KB note made the record too large to write, so kopf retried the CR for ever. A change of them no longer
    runs the handlers, which never read them. Otherwise the essence is kopf's (tests/operator/test_lifecycle.py).
    """

    def build(self, *, body: kopf.Body, extra_fields: Iterable[kopf.FieldSpec] | None = None) -> kopf.BodyEssence:
        if extra_fields:  # a handler watches fields outside the spec: kopf's own way
            return super().build(body=body, extra_fields=extra_fields)
        meta = body.get("metadata") or {}
        kept: dict[str, Any] = {k: _korall_only(meta[k]) for k in ("labels", "annotations") if meta.get(k)}
        if "ownerReferences" in meta:
            kept["ownerReferences"] = meta["ownerReferences"]
        lean = {**{k: v for k, v in body.items() if k not in ("status", "metadata")}, "metadata": kept}
        return super().build(body=kopf.Body(cast(kopf.RawBody, lean)))


def _korall_only(keys: Any) -> dict[str, Any]:
    return {k: v for k, v in keys.items() if k.startswith(KORALL_KEYS)}


def configure(settings: kopf.OperatorSettings, korall: OperatorSettings) -> None:
    """Apply korall's choices to kopf's settings (pure: also used by tests and the bench)."""
    settings.watching.server_timeout = korall.watch_server_timeout_s
    settings.watching.client_timeout = korall.watch_client_timeout_s
    settings.watching.connect_timeout = korall.watch_connect_timeout_s
    settings.posting.loggers = False  # kopf's default since 1.44; explicit, as the module docstring says why
    # One namespace: kopf would otherwise list and watch all namespaces to match its namespace patterns, which a
    # namespaced install is not allowed to (a 403 retried for about a minute, with nothing reconciled meanwhile).
    # Cluster-wide, scanning stays on, so that CRDs installed after the operator are still picked up.
    settings.scanning.disabled = bool(korall.watch_namespace)
    settings.persistence.finalizer = f"{KOPF_PREFIX}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=KOPF_PREFIX)
    settings.persistence.diffbase_storage = LeanDiffBaseStorage(prefix=KOPF_PREFIX, key="last-handled-configuration")
    settings.execution.max_workers = 4  # sync handlers only (ours are async); keeps the thread pool small
    # Per-object workers: at most this many at once, each released soon after its object goes quiet. Bounds the
    # memory of a burst (1000 new CRs at once) without slowing it down (see bench/bench_operator.py).
    settings.queueing.worker_limit = 100
    settings.queueing.idle_timeout = 0.5


@kopf.on.login()
def login(**_: Any) -> kopf.ConnectionInfo:
    """The same credentials as the child-object client, by the same function (k8s.login): the pod's service
    account, or `$KUBECONFIG` as it is when called (tests and tools set it late)."""
    return k8s.login()


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: Any, logger: kopf.Logger, **kwargs: Any) -> None:
    korall = load_settings()
    configure(settings, korall)
    logging.getLogger().setLevel(korall.log_level)
    memo.korall = State(settings=korall, kube=await KubeClient.from_environment())
    # kopf passes the indexes to startup handlers too, empty until its watches have listed: the loop's first
    # round comes one interval later.
    indexes = Indexes.of(kwargs)
    memo.resync = asyncio.create_task(resync_forever(memo.korall, indexes), name="korall resync")
    memo.links = asyncio.create_task(keep_links_fresh(memo.korall, indexes), name="korall model links")
    alerts = AlertService(korall, memo.korall.kube, memo.korall.events, lambda: _parents(indexes))
    memo.alerts = asyncio.create_task(alerts.run(), name="korall alerts")
    memo.metrics = await metrics.serve(korall.metrics_port) if korall.metrics_port else None
    logger.info(f"korall operator configured: TPU resource {korall.tpu_resource or '(none)'}")


def _parents(indexes: Indexes) -> list[ParentView]:
    """Every InferenceModel and CaptureProfile the indexes know (what the alerting evaluates)."""
    return [view for index in (indexes.models, indexes.profiles) for store in index.values() for view in store]


@kopf.on.cleanup()
async def stop(memo: Any, **_: Any) -> None:
    for name in ("alerts", "resync", "links"):
        task = getattr(memo, name, None)
        if isinstance(task, asyncio.Task):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    server = getattr(memo, "metrics", None)
    if isinstance(server, web.AppRunner):
        await server.cleanup()
    korall = getattr(memo, "korall", None)
    if isinstance(korall, State):
        await korall.kube.close()
