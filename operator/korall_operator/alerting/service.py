"""The alerting task: one per operator, started beside the resync loop (handlers/lifecycle.py).

Every tick (a second at most) it reads every resource the operator's indexes know (in memory, no API call),
asks the rules what fires, lets the grouping engine decide what is due, and sends it. After each mail it records
the engine's snapshot in the state ConfigMap, so that a restarted operator neither mails again what was mailed
nor forgets to mail a resolution (what was not mailed yet is found again in the resources' conditions).

- Nothing lost across an SMTP outage: a mail that fails stays due and is retried after 1 s, 2 s, 4 s ... up to
  `alerts_retry_max_s`; alerts that change meanwhile go into it.
- Bad SMTP settings (a refused login, a certificate that does not verify, a missing Secret): an ERROR log line that
  says what to fix, `korall_operator_alert_mail_failing 1`, and a Warning Event `AlertMailFailed` on the state
  ConfigMap; the reconcile handlers never wait for any of it.
- Nothing doubled across a restart: an alert whose resource the indexes do not know yet (just after a start) is
  not resolved until the resource is known, or a GET says it is gone.
- The one remaining window: the server took a mail and the operator stopped before its ConfigMap write (a few
  milliseconds). The mail is then sent again, with the same Message-ID, which mail clients fold into one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import aiohttp
from korall_contract import API_GROUP, API_VERSION

from korall_operator.alerting import metrics, smtp
from korall_operator.alerting.grouping import Engine, Notification
from korall_operator.alerting.mail import render, subject
from korall_operator.alerting.policy import SEVERITIES, Policy
from korall_operator.alerting.rules import Resource, firing_of
from korall_operator.alerting.store import StateStore, read_credentials
from korall_operator.events import EventRecorder
from korall_operator.k8s import ApiError, KubeClient
from korall_operator.settings import OperatorSettings

logger = logging.getLogger("korall.alerts")

ABSENT_GRACE_S = 10.0
"""A mailed alert whose resource the indexes do not know is left alone this long (they fill within seconds of a
start); then a GET decides: gone (or no longer watched) resolves it."""

MAX_TICK_S = 1.0
SAVE_RETRY_S = 10.0
"""A state write that failed is tried again after this long (or with the next mail)."""
_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")

Parent = tuple[str, str, str]


def own_namespace() -> str:
    """The operator pod's namespace (its service account's), or `default` outside a cluster."""
    try:
        return _NAMESPACE_FILE.read_text().strip() or "default"
    except OSError:
        return "default"


class AlertService:
    def __init__(
        self,
        settings: OperatorSettings,
        kube: KubeClient,
        events: EventRecorder,
        resources: Callable[[], Iterable[Resource]],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.policy = Policy.from_settings(settings)
        self.engine = Engine(self.policy)
        self._kube, self._events, self._resources, self._clock = kube, events, resources, clock
        self.namespace = settings.alerts_namespace or own_namespace()
        self.server = (
            smtp.SmtpServer(
                settings.alerts_smtp_host,
                settings.alerts_smtp_port,
                settings.alerts_smtp_security,
                settings.alerts_smtp_timeout_s,
            )
            if settings.alerts_smtp_host
            else None
        )
        self.store = StateStore(kube, self.namespace, settings.alerts_state_configmap) if self.server else None
        self._absent_since: dict[Parent, float] = {}
        self._gone: set[Parent] = set()
        self._retry_at: dict[str, float] = {}
        self._backoff: dict[str, float] = {}
        self._failing: str | None = None
        self._dirty = False
        self._save_after = 0.0

    # ------------------------------------------------------------------------------------------- the loop

    async def run(self) -> None:
        metrics.FIRING.engine = self.engine
        try:
            await self._restore()
            logger.info(self.describe())
            while True:
                now = self._clock()
                try:
                    await self.step(now)
                except asyncio.CancelledError:
                    raise
                except Exception:  # never let one bad round end the alerting
                    logger.exception("alerting round failed; the next one tries again")
                await asyncio.sleep(self._pause(self._clock()))
        finally:
            if metrics.FIRING.engine is self.engine:
                metrics.FIRING.engine = None

    async def step(self, now: float) -> None:
        """One round: evaluate, resolve, send what is due, record what was sent."""
        resources = list(self._resources())
        firing = [f for r in resources for f in firing_of(r, now, self.policy)]
        known = {(r.kind, r.namespace, r.name) for r in resources}
        await self._look_for_absent(known, now)
        self.engine.observe(firing, now, known=lambda key: key.parent in known or key.parent in self._gone)
        self._gone &= {a.key.parent for a in self.engine.alerts()}
        if self.server is not None:
            await self._send_due(now)
        elif due := self.engine.due(now):  # no mail: the engine still moves on, as if mailed to nobody
            for n in due:
                self.engine.delivered(n, now)
        if self._dirty and now >= self._save_after:
            await self._save(now)

    def describe(self) -> str:
        """One line on where alerts go (logged at start)."""
        if self.server is None:
            return "alert mails off (no SMTP host); alerts are evaluated for /metrics only"
        routes = "; ".join(f"{s} -> {', '.join(self.recipients(s)) or 'nobody'}" for s in SEVERITIES)
        p = self.policy
        return (
            f"alert mails through {self.server}: {routes} (group_wait {p.group_wait_s:g} s, group_interval "
            f"{p.group_interval_s:g} s, repeat_interval {p.repeat_interval_s:g} s; state in {self.store})"
        )

    def _pause(self, now: float) -> float:
        wake = [now + min(MAX_TICK_S, self.policy.group_wait_s / 4)]
        if (due := self.engine.next_due()) is not None:
            wake.append(due)
        wake += [t for t in self._retry_at.values() if t > now]
        return max(0.05, min(wake) - now)

    # ------------------------------------------------------------------------------------------- restart

    async def _restore(self) -> None:
        if self.store is None:
            return
        state = await self.store.load()
        if not state:
            return
        try:
            count = self.engine.restore(state)
        except (KeyError, TypeError, ValueError) as e:
            logger.error(f"alert state in {self.store} unreadable ({e}); starting empty")
            self.engine = Engine(self.policy)
            metrics.FIRING.engine = self.engine
            return
        logger.info(f"alert state restored from {self.store}: {count} mailed alerts")

    async def _look_for_absent(self, known: set[Parent], now: float) -> None:
        """Mailed alerts of resources the indexes do not know: after a grace, a GET says whether they are gone."""
        parents = {a.key.parent for a in self.engine.alerts() if a.firing and a.notified} - known - self._gone
        self._absent_since = {p: self._absent_since.get(p, now) for p in parents}
        for parent in parents:
            if now - self._absent_since[parent] < ABSENT_GRACE_S:
                continue
            kind, namespace, name = parent
            try:
                body = await self._kube.get(f"{API_GROUP}/{API_VERSION}", f"{kind.lower()}s", namespace, name)
            except ApiError as e:
                if e.status != 403:  # 403: a namespace this operator no longer watches; its alerts are over
                    self._absent_since[parent] = now
                    continue
                body = None
            except aiohttp.ClientError:
                self._absent_since[parent] = now
                continue
            if body is None:
                self._gone.add(parent)
            else:  # there, but not indexed yet: ask again after another grace
                self._absent_since[parent] = now

    # ------------------------------------------------------------------------------------------- sending

    def recipients(self, severity: str) -> list[str]:
        by_severity = {str(k): v for k, v in self.settings.alerts_to_by_severity.items()}
        return list(by_severity.get(severity, self.settings.alerts_to))

    async def _send_due(self, now: float) -> None:
        assert self.server is not None
        due = self.engine.due(now)
        metrics.MAILS_PENDING.set(len(due))
        for n in due:
            if now < self._retry_at.get(n.group, 0.0):
                continue
            to = self.recipients(n.group)
            if not to:  # nobody is to be mailed about this severity: done, as if sent
                self.engine.delivered(n, now)
                self._dirty = True
                continue
            try:
                await self._send(n, to, now)
            except smtp.PartlyRefused as e:
                logger.warning(f"alert mail {subject(n)!r}: {e.message}; the other recipients got it")
            except smtp.MailError as e:
                await self._failed(n, e, now)
                continue
            await self._delivered(n, to, now)

    async def _send(self, n: Notification, to: list[str], now: float) -> None:
        assert self.server is not None
        credentials = await read_credentials(self._kube, self.namespace, self.settings.alerts_smtp_secret)
        message = render(
            n,
            sender=self._sender(credentials.username),
            recipients=to,
            cluster=self.settings.alerts_cluster_name,
            digest_after=self.policy.digest_after,
            repeat_interval_s=self.policy.repeat_interval_s,
            now=now,
        )
        await asyncio.to_thread(smtp.send, self.server, credentials, message, to)

    def _sender(self, username: str | None) -> str:
        if self.settings.alerts_from:
            return self.settings.alerts_from
        if username and "@" in username:
            return username
        return f"korall@{self.settings.alerts_smtp_host}"

    async def _delivered(self, n: Notification, to: list[str], now: float) -> None:
        self.engine.delivered(n, now)
        self._dirty = True
        await self._save(now)
        metrics.MAILS.labels("sent", "").inc()
        metrics.LAST_SENT.set(now)
        metrics.MAIL_FAILING.set(0)
        self._retry_at.pop(n.group, None)
        self._backoff.pop(n.group, None)
        logger.info(f"alert mail sent to {', '.join(to)}: {subject(n, self.settings.alerts_cluster_name)}")
        if self._failing is not None:
            self._failing = None
            logger.info("alert mails are delivered again")
            await self._post("Normal", "AlertMailRecovered", f"alert mails are delivered again through {self.server}")

    async def _failed(self, n: Notification, error: smtp.MailError, now: float) -> None:
        backoff = min(self.settings.alerts_retry_max_s, max(1.0, 2 * self._backoff.get(n.group, 0.5)))
        self._backoff[n.group] = backoff
        self._retry_at[n.group] = now + backoff
        metrics.MAILS.labels("failed", error.kind).inc()
        metrics.MAIL_FAILING.set(1)
        fix = " (check the SMTP settings: alerts.smtp.* and the Secret)" if error.settings else ""
        line = f"alert mail not sent ({len(n.firing)} firing, {len(n.resolved)} resolved): {error.message}{fix}"
        logger.log(logging.ERROR if error.settings else logging.WARNING, f"{line}; retrying in {backoff:g} s")
        if self._failing != error.message:
            self._failing = error.message
            await self._post("Warning", "AlertMailFailed", f"{error.message}{fix}")

    async def _save(self, now: float) -> None:
        if self.store is None:
            self._dirty = False
            return
        try:
            await self.store.save(self.engine.snapshot())
        except (ApiError, aiohttp.ClientError) as e:
            metrics.STATE_SAVE_FAILURES.inc()
            self._save_after = now + SAVE_RETRY_S
            logger.warning(f"alert state not recorded in {self.store} ({e}); retrying in {SAVE_RETRY_S:g} s")
            return
        self._dirty = False

    async def _post(self, type_: str, reason: str, message: str) -> None:
        """An Event about the alerting itself, on the state ConfigMap (`kubectl -n <release ns> get events`)."""
        body = self.store.body if self.store is not None else None
        if body and body.get("metadata", {}).get("uid"):
            with contextlib.suppress(Exception):  # an Event is a courtesy: never fail the alerting for it
                await self._events.record(body, type_, reason, message)
