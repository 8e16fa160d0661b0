"""kopf handlers of the korall operator, one module per resource or concern.

Importing this package registers every handler with kopf's default registry (`kopf run -m
korall_operator.handlers` or `python -m korall_operator`):

- lifecycle: start-up settings, the API client and the resync loop; shutdown;
- indexes: what the operator keeps in memory of Deployments, Services, Pods and its own resources (kopf indexes);
- inference_models: reconcile an InferenceModel into its vision Deployment and Service;
- capture_profiles: reconcile audio CaptureProfiles; poke the InferenceModels of a profile that changed;
- children: a child Deployment or Pod changed: its parent's status follows; a child Service deleted: applied again
  (follow.py);
- model_links: presigned links of s3 models, signed at reconcile and again before they expire (a daemon);
- promotion, validation, approvals: the model catalog's gate (which model the Deployment runs), its validation
  Jobs and their outcomes, ModelApprovals (docs/catalog.md);
- resync (no handlers): the periodic loop that puts right whatever a lost event left out of line.
"""

from korall_operator.handlers.approvals import approval_changed
from korall_operator.handlers.capture_profiles import forget_capture_profile, reconcile_capture_profile
from korall_operator.handlers.children import deployment_changed, pod_changed, service_deleted
from korall_operator.handlers.indexes import (
    approvals_by_model,
    capture_profiles,
    deployments_by_parent,
    inference_models,
    inference_models_by_capture_profile,
    pod_problems_by_parent,
    services_by_parent,
    validation_job_outcomes,
    validation_jobs,
    validation_pod_outcomes,
)
from korall_operator.handlers.inference_models import forget_inference_model, reconcile_inference_model
from korall_operator.handlers.lifecycle import configure, start, stop
from korall_operator.handlers.validation import validation_job_changed, validation_pod_changed

__all__ = [
    "approval_changed",
    "approvals_by_model",
    "capture_profiles",
    "configure",
    "deployment_changed",
    "deployments_by_parent",
    "forget_capture_profile",
    "forget_inference_model",
    "inference_models",
    "inference_models_by_capture_profile",
    "pod_changed",
    "pod_problems_by_parent",
    "reconcile_capture_profile",
    "reconcile_inference_model",
    "service_deleted",
    "services_by_parent",
    "start",
    "stop",
    "validation_job_changed",
    "validation_job_outcomes",
    "validation_jobs",
    "validation_pod_changed",
    "validation_pod_outcomes",
]
