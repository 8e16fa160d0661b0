"""korall operator: a kopf operator reconciling InferenceModel and CaptureProfile into vision and audio workloads.

Layers, outermost first (each imports only the ones below it):

- `main` / `__main__`: `python -m korall_operator`, the same as `kopf run --standalone -m korall_operator.handlers`;
- `handlers`: kopf handlers, one module per resource or concern; the only place that knows kopf's callbacks;
- `cli`: `kubectl korall`, the model catalog from the command line (over `k8s` only);
- `status`: pure functions from what the operator knows (spec outcome, child Deployment) to the CR status;
- `catalog`: pure: the model catalog's gate (stages, validation, approval, rollback; docs/catalog.md);
- `manifests`: pure builders of the child objects; `specs`: typed CR specs and `SpecError`;
- `k8s`: the only module that calls the Kubernetes API (besides kopf itself, for the CR being handled);
- `settings`: the one place configuration is read (`KORALL_*` environment variables).

This package re-exports the pure, light parts only: importing it does not import kopf or an API client.
"""

from korall_operator.settings import OperatorSettings
from korall_operator.specs import (
    CaptureProfileSpec,
    InferenceModelSpec,
    SpecError,
    parse_capture_profile,
    parse_inference_model,
)

__all__ = [
    "CaptureProfileSpec",
    "InferenceModelSpec",
    "OperatorSettings",
    "SpecError",
    "parse_capture_profile",
    "parse_inference_model",
]
