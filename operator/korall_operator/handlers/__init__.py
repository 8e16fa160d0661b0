"""kopf handlers of the korall operator, one module per resource or concern.

Importing this package registers every handler with kopf's default registry (`kopf run -m
korall_operator.handlers` or `python -m korall_operator`):

- lifecycle: start-up settings and the API client, shutdown;
- inference_models: reconcile an InferenceModel into its vision Deployment and Service; the capture-profile index;
- capture_profiles: reconcile audio CaptureProfiles; poke the InferenceModels of a profile that changed;
- deployments: the parent's status follows its child Deployment.
"""

from korall_operator.handlers.capture_profiles import forget_capture_profile, reconcile_capture_profile
from korall_operator.handlers.deployments import follow_deployment
from korall_operator.handlers.inference_models import inference_models_by_capture_profile, reconcile_inference_model
from korall_operator.handlers.lifecycle import configure, start, stop

__all__ = [
    "configure",
    "follow_deployment",
    "forget_capture_profile",
    "inference_models_by_capture_profile",
    "reconcile_capture_profile",
    "reconcile_inference_model",
    "start",
    "stop",
]
