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


def with_init_containers(
    base: dict[str, Any], *statuses: tuple[str, dict[str, Any], dict[str, Any], int]
) -> dict[str, Any]:
    """`base` with init containers (name, state, lastState, restarts); `model-hold` is a native sidecar, as built."""
    base["spec"]["initContainers"] = [
        {"name": name, **({"restartPolicy": "Always"} if name == "model-hold" else {})} for name, *_ in statuses
    ]
    base["status"]["initContainerStatuses"] = [
        {"name": name, "state": state, "lastState": last, "restartCount": restarts}
        for name, state, last, restarts in statuses
    ]
    return base


FETCHED = ("model-fetch", {"terminated": {"exitCode": 0, "reason": "Completed"}}, {}, 0)
NOT_CACHED = "ModelNotCached: sha256:abab... is not held in the node's model cache: ..."


def test_the_model_hold_sidecar_is_judged_by_its_state_now_as_a_container_is() -> None:
    ready = {"ready_since": "2025-06-01T10:00:05Z", "started": "2025-06-01T10:00:00Z", "ready": True}
    failed_once = {"terminated": {"exitCode": 1, "reason": "Error", "message": NOT_CACHED}}
    # It failed once and runs again: nothing is wrong now (an init container's exit would still be reported).
    running = ("model-hold", {"running": {"startedAt": "2025-06-01T10:00:00Z"}}, failed_once, 1)
    assert pod_problem(with_init_containers(pod(**ready), FETCHED, running)) is None  # type: ignore[arg-type]
    # It keeps failing: the kubelet's back-off, with its last exit's line.
    back_off = {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 10s restarting failed container"}}
    looping = ("model-hold", back_off, failed_once, 3)
    problem = pod_problem(with_init_containers(pod(**ready), FETCHED, looping))  # type: ignore[arg-type]
    assert problem is not None and problem.reason == "CrashLoopBackOff"
    assert "container model-hold: CrashLoopBackOff" in problem.message and NOT_CACHED in problem.message
    assert "restarted 3 times, last exit 1" in problem.message
    # An ordinary init container that failed and runs again is still reported by its failure (unchanged).
    retrying = (
        "model-fetch",
        {"running": {}},
        {"terminated": {"exitCode": 3, "message": "ModelDownloadFailed: NotFound: x"}},
        1,
    )
    problem = pod_problem(with_init_containers(pod(**ready), retrying))  # type: ignore[arg-type]
    assert problem is not None and problem.reason == "ModelDownloadFailed"
