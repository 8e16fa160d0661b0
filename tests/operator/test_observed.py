"""observed.pod_problem: what keeps a pod from running or serving, as the kubelet reports it (pure)."""

from __future__ import annotations

from typing import Any

from korall_contract import VisionEnv
from korall_operator.observed import pod_problem


def pod(component: str = "vision", *, env: dict[str, str] | None = None, ready_since: str, started: str,
        ready: bool = False, container_started: bool = True) -> dict[str, Any]:  # fmt: skip
    """A running pod whose Ready condition last flipped at `ready_since` and whose container started at `started`."""
    return {
        "metadata": {"name": "cam-vision-1", "labels": {"app.kubernetes.io/component": component}},
        "spec": {"containers": [{"name": component, "env": [{"name": k, "value": v} for k, v in (env or {}).items()]}]},
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": str(ready), "lastTransitionTime": ready_since}],
            "containerStatuses": [
                {
                    "name": component,
                    "ready": ready,
                    "started": container_started,
                    "restartCount": 0,
                    "state": {"running": {"startedAt": started}},
                }
            ],
        },
    }


CAMERA = {VisionEnv.CAPTURE_SOURCE: "/dev/video0"}


def test_a_camera_pod_that_lost_its_readiness_says_the_camera_is_unavailable() -> None:
    problem = pod_problem(pod(env=CAMERA, started="2025-06-01T10:00:00Z", ready_since="2025-06-01T10:05:00Z"))
    assert problem is not None and problem.reason == "CameraUnavailable"
    assert problem.message == (
        "pod cam-vision-1: the camera stopped streaming (not ready since 2025-06-01T10:05:00Z; "
        "container vision still running)"
    )
    audio = pod_problem(pod("audio", started="2025-06-01T10:00:00Z", ready_since="2025-06-01T10:05:00Z"))
    assert audio is not None and audio.reason == "AudioSourceUnavailable"
    no_camera = pod_problem(pod(started="2025-06-01T10:00:00Z", ready_since="2025-06-01T10:05:00Z"))
    assert no_camera is not None and no_camera.reason == "ReadinessLost"


def test_a_pod_not_ready_since_before_its_container_started_is_still_starting() -> None:
    """Not ready since the pod was made (model loading, camera connecting): a rollout, not a loss."""
    for since in ("2025-06-01T10:00:00Z", "2025-06-01T09:59:58Z"):
        assert pod_problem(pod(env=CAMERA, started="2025-06-01T10:00:00Z", ready_since=since)) is None
    kwargs = {"env": CAMERA, "started": "2025-06-01T10:00:00Z", "ready_since": "2025-06-01T10:05:00Z"}
    assert pod_problem(pod(**kwargs, ready=True)) is None  # type: ignore[arg-type]
    assert pod_problem(pod(**kwargs, container_started=False)) is None  # type: ignore[arg-type]
    deleting = pod(**kwargs)  # type: ignore[arg-type]
    deleting["metadata"]["deletionTimestamp"] = "2025-06-01T10:06:00Z"
    assert pod_problem(deleting) is None
