"""One camera, one pod: the pure parts. A pod Pending for its camera resource is recognised from the scheduler's
own message (observed.pod_problem), and becomes CameraInUse naming the model that holds the camera
(Indexes.children over in-memory indexes shaped as kopf keeps them). The scheduler and the operator doing this on a
real API server: tests/realcluster/test_devices.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from korall_operator.camera_use import CAMERA_IN_USE, camera_in_use
from korall_operator.handlers.indexes import Indexes, ParentView
from korall_operator.observed import PodProblem, parent_key, pod_problem

# What kube-scheduler writes when the only node with the camera has it allocated (and the others lack it).
SCHEDULER = (
    "0/4 nodes are available: 1 Insufficient korall.io/video0, 3 node(s) didn't match Pod's node affinity/selector. "
    "preemption: 0/4 nodes are available: 1 No preemption victims found for incoming pod, 3 Preemption is not "
    "helpful for scheduling."
)


def pending_pod(message: str, cameras: str | None = "korall.io/video0") -> dict[str, Any]:
    annotations = {"korall.io/camera-resources": cameras} if cameras is not None else {}
    return {
        "metadata": {"name": "second-vision-7d9-x2", "namespace": "ns", "annotations": annotations},
        "status": {
            "phase": "Pending",
            "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message},
            ],
        },
    }


@pytest.mark.parametrize(
    ("message", "cameras", "camera"),
    [
        (SCHEDULER, "korall.io/video0", "korall.io/video0"),
        (SCHEDULER, "korall.io/video1,korall.io/video0", "korall.io/video0"),
        # the TPU is what is missing, not the camera
        ("0/2 nodes are available: 2 Insufficient coral.ai/tpu.", "korall.io/video0", None),
        # video1 is not video10
        ("0/1 nodes are available: 1 Insufficient korall.io/video10.", "korall.io/video1", None),
        (SCHEDULER, None, None),  # a pod without a camera resource
    ],
)
def test_the_missing_camera_is_read_from_the_scheduler_message(
    message: str, cameras: str | None, camera: str | None
) -> None:
    problem = pod_problem(pending_pod(message, cameras))
    assert problem is not None
    assert (problem.reason, problem.camera) == ("Unschedulable", camera)
    assert message in problem.message


def test_camera_in_use_names_the_holder_and_what_to_do() -> None:
    problem = PodProblem("second-vision-x", "Unschedulable", "pod second-vision-x: " + SCHEDULER, "korall.io/video0")
    told = camera_in_use(problem, "door-camera", ["first"])
    assert told.reason == CAMERA_IN_USE == "CameraInUse"
    assert "CaptureProfile 'door-camera' (korall.io/video0) is in use by InferenceModel 'first'" in told.message
    assert "delete 'first' or set its replicas to 0" in told.message
    assert "another replica of this model" in camera_in_use(problem, "door-camera", []).message


class Index(dict[Any, list[Any]]):
    """What a kopf.Index is to its readers: a mapping of keys to collections of values."""


def indexes(models: dict[str, dict[str, Any]], profile: str = "cam", ns: str = "ns") -> Indexes:
    """Each model: its Deployment status (None: no Deployment) and its pod problem (None: none)."""
    deployments, problems, views, users = Index(), Index(), Index(), Index()
    for name, model in models.items():
        key = parent_key("InferenceModel", ns, name)
        if model.get("status") is not None:
            deployments[key] = [{"metadata": {"name": f"{name}-vision"}, "status": model["status"]}]
        if model.get("problem") is not None:
            problems[key] = [model["problem"]]
        views[("InferenceModel", ns, name)] = [
            ParentView("InferenceModel", ns, name, f"uid-{name}", 1, {}, capture_profile=profile)
        ]
        users.setdefault((ns, profile), []).append(name)
    return Indexes(deployments, problems, views, Index(), users)


WAITING = PodProblem("second-vision-x", "Unschedulable", "pod second-vision-x: " + SCHEDULER, "korall.io/video0")


def test_a_pod_waiting_for_the_camera_of_a_running_model_is_camera_in_use() -> None:
    idx = indexes(
        {
            "first": {"status": {"replicas": 1, "readyReplicas": 1}},
            "second": {"status": {"replicas": 1}, "problem": WAITING},
        }
    )
    _, problem = idx.children("InferenceModel", "ns", "second")
    assert problem is not None and problem.reason == "CameraInUse"
    assert "InferenceModel 'first'" in problem.message
    # the holder itself is fine
    assert idx.children("InferenceModel", "ns", "first")[1] is None


@pytest.mark.parametrize(
    "first",
    [
        {"status": None},  # no Deployment (yet): it holds nothing
        {"status": {"replicas": 0}},  # scaled to 0: nothing held
        {"status": {"replicas": 1}, "problem": WAITING},  # waiting for the camera too: someone else holds it
    ],
)
def test_the_scheduler_word_stands_when_no_model_holds_the_camera(first: dict[str, Any]) -> None:
    idx = indexes({"first": first, "second": {"status": {"replicas": 1}, "problem": WAITING}})
    _, problem = idx.children("InferenceModel", "ns", "second")
    assert (
        problem is not None
        and problem.reason == "Unschedulable"
        and "Insufficient korall.io/video0" in (problem.message)
    )


def test_a_second_replica_of_one_model_waits_for_its_own_first() -> None:
    idx = indexes({"solo": {"status": {"replicas": 2, "readyReplicas": 1}, "problem": WAITING}})
    _, problem = idx.children("InferenceModel", "ns", "solo")
    assert problem is not None and problem.reason == "CameraInUse"
    assert "another replica of this model" in problem.message and "set replicas to 1" in problem.message


def test_other_problems_are_left_as_they_are() -> None:
    crash = PodProblem("p", "CrashLoopBackOff", "pod p: container vision: CrashLoopBackOff")
    idx = indexes({"first": {"status": {"replicas": 1}}, "second": {"status": {"replicas": 1}, "problem": crash}})
    assert idx.children("InferenceModel", "ns", "second")[1] == crash
