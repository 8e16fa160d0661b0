"""Reusing a presigned model link while it is fresh, instead of signing one at every reconcile.

Every reconcile of an s3 InferenceModel used to sign a new link, and signing counts against the per-model rate
limit (`modelDelivery.linkRatePerModel`, 6 a minute by default): a burst of edits, approvals or resync rounds of
one model was `LinkRateLimited` although its object had not changed. What KServe's storage initializers and Argo's
artifact links do is what users expect: a link is reused while it is valid. Here: while more than `RENEW_AT` of
its lifetime is left, the same rule by which the renewal task (handlers/model_links.py) signs anew.

Pure and in memory: the operator may write link Secrets but never read them (the chart's RBAC), and a link is a
bearer credential that has no place in the status. An operator that restarts signs each model's link once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from korall_operator.presign import PresignedLink, S3Credentials

RENEW_AT = 0.5
"""The fraction of a link's lifetime after which it is signed anew: by the renewal task (`renewal_in`), and by a
reconcile instead of reusing it (`IssuedLinks`). One rule, so that a reconcile never keeps a link the renewal task
is about to replace, and a pod never starts with a link that has less than half its lifetime left."""


@dataclass(frozen=True)
class LinkSource:
    """What a link is signed for: the object, the credentials Secret, and what that Secret held (the keys, and the
    endpoint and region it overrides; S3Credentials compares them all). Another object or another Secret is another
    source; so are rotated keys in the same Secret (a link signed with revoked keys fails in S3 at once)."""

    uri: str
    secret: str  # namespace/name of the credentials Secret
    credentials: S3Credentials


@dataclass(frozen=True)
class _Issued:
    uid: str  # of the InferenceModel: one recreated under the same name gets its own link
    source: LinkSource
    link: PresignedLink


class IssuedLinks:
    """The link this process signed last for each model ("namespace", "name"), and what for, to be reused by the
    model's next reconciles while more than `RENEW_AT` of its lifetime is left. About 1 KB a model."""

    def __init__(self) -> None:
        self._by_model: dict[tuple[str, str], _Issued] = {}

    def reusable(self, model: tuple[str, str], uid: str, source: LinkSource, now: float) -> PresignedLink | None:
        """The link last signed for this model and source, unless it is past `RENEW_AT` of its lifetime."""
        issued = self._by_model.get(model)
        if issued is None or issued.uid != uid or issued.source != source:
            return None
        return None if issued.link.renewal_due(now, RENEW_AT) else issued.link

    def remember(self, model: tuple[str, str], uid: str, source: LinkSource, link: PresignedLink, now: float) -> None:
        """Keep `link` for reuse, dropping what no reconcile can reuse any more (deleted models' links included)."""
        for key in [k for k, v in self._by_model.items() if v.link.renewal_due(now, RENEW_AT)]:
            del self._by_model[key]
        self._by_model[model] = _Issued(uid, source, link)

    def forget(self, model: tuple[str, str]) -> None:
        self._by_model.pop(model, None)
