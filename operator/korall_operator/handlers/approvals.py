"""ModelApprovals: a new one has its InferenceModel's gate run again (the catalog: catalog/gate.py).

The approvals themselves live in a kopf index (indexes.py: approvals_by_model), which the gate reads. This handler
only pokes the InferenceModel a new approval names, unless that model already serves the approved file. It does not
wait for the model's Promoted condition to say PendingApproval: the index's view of the model may lag behind the
approval (two watch streams), and such a poke was lost until the next resync. The poke is a change of the model's
`korall.io/reconcile-requested` annotation, so kopf runs its update handler with its own retries.

Approvals listed when the operator starts poke nothing, and a lost poke is not retried here: the resync loop
compares the approvals with the waiting models (follow.drift, catalog.attention) and pokes those. An approval
changes nothing for a model that does not wait for it; a deleted approval does not take an admitted model out of
service (the history keeps who approved it).
"""

from __future__ import annotations

from typing import Any

import aiohttp
import kopf

from korall_operator import status as st
from korall_operator.handlers._common import API, MODEL_APPROVALS, state
from korall_operator.handlers.follow import request_reconcile
from korall_operator.handlers.indexes import Indexes
from korall_operator.k8s import ApiError

GROUP, VERSION = API.split("/")


@kopf.on.event(GROUP, VERSION, MODEL_APPROVALS)
async def approval_changed(
    type: str | None, spec: kopf.Spec, namespace: str | None, memo: Any, logger: kopf.Logger, **kwargs: Any
) -> None:
    if type not in ("ADDED", "MODIFIED") or namespace is None or not isinstance(spec.get("inferenceModel"), str):
        return
    view = Indexes.of(kwargs).parent("InferenceModel", namespace, spec["inferenceModel"])
    if view is None or view.status.get("activeModelSha256") == spec.get("sha256"):
        return
    if st.waits_for_spec_change(view.status):  # its reconcile stops before the gate: it runs when the spec changes
        return
    try:
        await request_reconcile(state(memo), view)
    except (ApiError, aiohttp.ClientError) as e:  # the resync loop sees the approval and pokes again
        logger.warning(f"InferenceModel {view.name} not poked for its approval yet: {e}")
