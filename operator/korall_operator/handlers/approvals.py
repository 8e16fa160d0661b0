"""ModelApprovals: a new one has its InferenceModel's gate run again (the catalog: catalog/gate.py).

The approvals themselves live in a kopf index (indexes.py: approvals_by_model), which the gate reads. This handler
only pokes the InferenceModel an approval names, when that model waits for one (its Promoted condition says
PendingApproval): the poke is a change of its `korall.io/reconcile-requested` annotation, so kopf runs its update
handler with its own retries. Should the poke be lost, the resync loop sees the approval and the waiting model
(follow.drift, catalog.attention) and pokes again. An approval changes nothing for a model that does not wait for
it; a deleted approval does not take an admitted model out of service (the history keeps who approved it).
"""

from __future__ import annotations

from typing import Any

import aiohttp
import kopf

from korall_operator.catalog import promotion_of
from korall_operator.catalog.gate import PENDING_APPROVAL
from korall_operator.handlers._common import API, MODEL_APPROVALS, state
from korall_operator.handlers.follow import request_reconcile
from korall_operator.handlers.indexes import Indexes
from korall_operator.k8s import ApiError

GROUP, VERSION = API.split("/")


@kopf.on.event(GROUP, VERSION, MODEL_APPROVALS)
async def approval_changed(
    type: str | None, spec: kopf.Spec, namespace: str | None, memo: Any, logger: kopf.Logger, **kwargs: Any
) -> None:
    if type == "DELETED" or namespace is None or not isinstance(spec.get("inferenceModel"), str):
        return
    view = Indexes.of(kwargs).parent("InferenceModel", namespace, spec["inferenceModel"])
    promotion = promotion_of(view.status) if view is not None else None
    if view is None or promotion is None or promotion.reason != PENDING_APPROVAL:
        return
    try:
        await request_reconcile(state(memo), view)
    except (ApiError, aiohttp.ClientError) as e:  # the resync loop sees the approval and pokes again
        logger.warning(f"InferenceModel {view.name} not poked for its approval yet: {e}")
