"""One camera, one pod: a model whose pod waits for a camera that another model's pod holds says so, by name.

A camera is an extended resource per device node (manifests/devices.py: /dev/video0 is `korall.io/video0`, one
unit), so the scheduler itself never gives one camera to two pods: the second stays Pending, `Insufficient
korall.io/video0`. That message names a resource, not the model in the way; V4L2 would have let only one process
stream anyway, and the second would have looped in `reconnecting` with nothing in its status. Here the pod's
Unschedulable problem (observed.pod_problem, which recognises the camera resource) becomes `CameraInUse`, naming
the InferenceModels that use the same CaptureProfile and hold its camera (handlers/indexes.Indexes.children finds
them: those whose pods exist and are not waiting for the camera themselves). Pure: no I/O.

Two models on one camera is therefore refused, clearly, rather than served: the second runs as soon as the first
lets the camera go (deleted, or scaled to 0), with no action on the second. Serving both from one capture (one
pod, several models, results tagged by model) would need the vision service to hold several interpreters, an API
and metrics per model, and a CRD that groups models; docs/operator.md#one-camera-one-pod says why that is left out.
"""

from __future__ import annotations

from collections.abc import Sequence

from korall_operator.observed import PodProblem

CAMERA_IN_USE = "CameraInUse"


def camera_in_use(problem: PodProblem, profile: str, holders: Sequence[str]) -> PodProblem:
    """The Unschedulable `problem` of a pod that waits for the camera of CaptureProfile `profile`, told as the
    camera being held by the InferenceModels `holders` (another replica of the same model, when it is its own)."""
    resource = problem.camera or "the camera"
    if holders:
        names = ", ".join(repr(h) for h in holders)
        who = f"InferenceModel {names}" if len(holders) == 1 else f"InferenceModels {names}"
        what = (
            f"the camera of CaptureProfile {profile!r} ({resource}) is in use by {who}: a camera serves one pod at a "
            f"time. This model starts by itself when the camera is free (delete {names} or set its replicas to 0), "
            "or give it another camera"
        )
    else:
        what = (
            f"the camera of CaptureProfile {profile!r} ({resource}) is in use by another replica of this model: a "
            "camera serves one pod at a time; set replicas to 1"
        )
    return PodProblem(problem.pod, CAMERA_IN_USE, f"pod {problem.pod}: {what}", problem.camera)
