"""The model catalog: stages, the validation and approval gates before production, rollbacks (pure).

- `records`: what the catalog keeps in an InferenceModel's status (model references, validation records, approvals,
  history), as typed records;
- `gate`: the policy: which model the Deployment runs given the spec, the status and the approvals, and why;
- `outcomes`: how a validation ended, read from its Job's pod (the validator's JSON termination message) or Job.

No kopf, no API client: the handlers (handlers/promotion.py, validation.py, approvals.py) carry out what these
decide. docs/catalog.md describes the whole path.
"""

from korall_operator.catalog.gate import (
    POLICIES,
    REQUESTER_ANNOTATION,
    SCALED_TO_ZERO,
    Decision,
    GateInputs,
    Promotion,
    applied_spec,
    attention,
    decide,
    promotion_of,
)
from korall_operator.catalog.outcomes import Outcome, outcome_of_job, outcome_of_pod, parse_result
from korall_operator.catalog.records import (
    GATED_FIELDS,
    HISTORY_LIMIT,
    Approval,
    ModelRef,
    ValidationRecord,
    appended,
    gated_part,
    history_entry,
    record_for,
    validation_config,
    with_record,
)

__all__ = [
    "GATED_FIELDS",
    "HISTORY_LIMIT",
    "POLICIES",
    "REQUESTER_ANNOTATION",
    "SCALED_TO_ZERO",
    "Approval",
    "Decision",
    "GateInputs",
    "ModelRef",
    "Outcome",
    "Promotion",
    "ValidationRecord",
    "appended",
    "applied_spec",
    "attention",
    "decide",
    "gated_part",
    "history_entry",
    "outcome_of_job",
    "outcome_of_pod",
    "parse_result",
    "promotion_of",
    "record_for",
    "validation_config",
    "with_record",
]
