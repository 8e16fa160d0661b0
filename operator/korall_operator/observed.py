"""What the operator keeps in memory of the objects it watches: small, pure views of Deployments, Pods and its own
custom resources, and the keys that tie a child to its parent.

kopf keeps its indexes (handlers/indexes.py) current from its watches; these functions decide what goes into them.
Only the few fields the status needs are kept, never whole bodies: a Deployment as the API returns it is several
kilobytes with its managedFields, and the operator holds one per InferenceModel (see bench/bench_operator.py).

A child is tied to its parent by labels, not by ownerReferences: a Pod's owner is a ReplicaSet, but every pod
template carries the parent's `app.kubernetes.io/component` and `app.kubernetes.io/instance` labels
(manifests.selector_labels), so Deployments and Pods share one key: (namespace, component, instance label).
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from korall_contract import VisionEnv

from korall_operator.manifests import (
    CAMERA_RESOURCES_ANNOTATION,
    MODEL_ANNOTATION,
    MODEL_SHA256_ANNOTATION,
    SPEC_HASH_ANNOTATION,
    label_value,
)

ChildKey = tuple[str, str, str]
"""(namespace, component, instance label value): the children of one parent."""

COMPONENT_OF_KIND = {"InferenceModel": "vision", "CaptureProfile": "audio"}

# A container waiting for one of these reasons will not start by itself: the kubelet backs off, and time alone
# does not fix it. (ContainerCreating and PodInitializing are normal waits, and are not listed.)
STUCK_WAITING = frozenset(
    {
        "CrashLoopBackOff",
        "ImagePullBackOff",
        "ErrImagePull",
        "ErrImageNeverPull",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
)
_REASON_IN_MESSAGE = re.compile(r"^([A-Z][A-Za-z0-9]+): (.+)$", re.DOTALL)

CAMERA_UNAVAILABLE = "CameraUnavailable"
AUDIO_SOURCE_UNAVAILABLE = "AudioSourceUnavailable"
READINESS_LOST = "ReadinessLost"


@dataclass(frozen=True)
class PodProblem:
    """Why a pod of a parent does not run: `reason` is a CamelCase word (condition reason, Event reason).
    `camera`: the camera resource the scheduler found no free unit of (`korall.io/video0`), when that is one of
    the reasons the pod is Unschedulable: another pod holds the camera (camera_use.py names it)."""

    pod: str
    reason: str
    message: str
    camera: str | None = None


def parent_key(kind: str, namespace: str, name: str) -> ChildKey:
    return namespace, COMPONENT_OF_KIND[kind], label_value(name)


def child_key(body: Mapping[str, Any]) -> ChildKey | None:
    """The key of a korall-managed Deployment or Pod, or None for one without korall's labels."""
    meta = body.get("metadata") or {}
    labels = meta.get("labels") or {}
    component, instance = labels.get("app.kubernetes.io/component"), labels.get("app.kubernetes.io/instance")
    if component not in COMPONENT_OF_KIND.values() or not instance or not meta.get("namespace"):
        return None
    return str(meta["namespace"]), str(component), str(instance)


def slim_deployment(body: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a Deployment that status.rollout_of() reads, in the same shape, plus its controller (the
    parent) as `metadata.owner`: a Pod finds its parent through its Deployment."""
    meta, spec, status = body.get("metadata") or {}, body.get("spec") or {}, body.get("status") or {}
    annotations = ((spec.get("template") or {}).get("metadata") or {}).get("annotations") or {}
    kept = {
        k: annotations[k] for k in (SPEC_HASH_ANNOTATION, MODEL_ANNOTATION, MODEL_SHA256_ANNOTATION) if k in annotations
    }
    owner = next((r for r in meta.get("ownerReferences") or [] if r.get("controller")), None)
    slim_meta = {k: meta[k] for k in ("name", "uid", "generation") if k in meta}
    if owner is not None:
        slim_meta["owner"] = {"kind": owner.get("kind"), "name": owner.get("name"), "uid": owner.get("uid")}
    return {
        "metadata": slim_meta,
        "spec": {"replicas": spec.get("replicas", 1), "template": {"metadata": {"annotations": kept}}},
        "status": {
            k: status[k]
            for k in ("observedGeneration", "replicas", "readyReplicas", "updatedReplicas", "conditions")
            if k in status
        },
    }


def pod_problem(pod: Mapping[str, Any]) -> PodProblem | None:
    """What keeps this pod from running, as the kubelet and the scheduler report it; None when nothing does.

    - a container or init container waiting for a reason in STUCK_WAITING (with its last exit, if it ran);
    - an init container that exited non-zero: its termination message names the reason when it starts with a
      CamelCase word and a colon (`ModelDownloadFailed: ...`, as korall's init containers write it); a native
      sidecar (`model-hold`) is judged as a container is;
    - the scheduler's Unschedulable, with its message (`0/3 nodes are available: 3 Insufficient coral.ai/tpu`);
    - a container that was ready and lost its readiness while it kept running (lost_readiness): the camera or the
      microphone of a capture pod.
    A pod being deleted has no problem worth reporting.
    """
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    name = str(meta.get("name", "?"))
    if meta.get("deletionTimestamp"):
        return None
    # A native sidecar (an init container with restartPolicy Always: the model's hold) runs for the pod's life: it is
    # judged like a container, by its state now, never by an exit it has restarted from.
    sidecars = {c.get("name") for c in (pod.get("spec") or {}).get("initContainers") or []
                if c.get("restartPolicy") == "Always"}  # fmt: skip
    for key, kind in (("initContainerStatuses", "init container"), ("containerStatuses", "container")):
        for container in status.get(key) or []:
            problem = _container_problem(container, "container" if container.get("name") in sidecars else kind)
            if problem is not None:
                reason, message = problem
                return PodProblem(name, reason, f"pod {name}: {message}")
    for cond in status.get("conditions") or []:
        unschedulable = cond.get("status") == "False" and cond.get("reason") == "Unschedulable"
        if cond.get("type") == "PodScheduled" and unschedulable:
            message = str(cond.get("message") or "unschedulable")
            return PodProblem(name, "Unschedulable", f"pod {name}: {message}", _missing_camera(meta, message))
    return lost_readiness(pod)


def lost_readiness(pod: Mapping[str, Any]) -> PodProblem | None:
    """A pod whose container was ready, and is running but no longer ready: what a lost camera looks like.

    The vision service's /ready fails only while its model loads (before the first ready) or while its camera does
    not stream; the model never unloads, and liveness (/health) does not depend on either, so the container keeps
    running. The audio service's /ready likewise fails only while its source delivers no audio. Whether the
    container was ready since it started is in the pod's Ready condition: it moves (lastTransitionTime) only when
    its status flips, so `False` since after the container's start means it was True in between. A pod still
    loading, or one that never got its camera, is not this (its rollout is reported as not progressing).
    """
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    if ready is None or ready.get("status") != "False":
        return None
    became = _time(ready.get("lastTransitionTime"))
    for container in status.get("containerStatuses") or []:
        started = _time(((container.get("state") or {}).get("running") or {}).get("startedAt"))
        if container.get("ready") or not container.get("started") or started is None or became is None:
            continue
        if became <= started:
            continue
        name, since = str(meta.get("name", "?")), ready.get("lastTransitionTime")
        reason, what = _readiness_loss(pod, str(container.get("name")))
        detail = f"pod {name}: {what} (not ready since {since}; container {container.get('name')} still running)"
        return PodProblem(name, reason, detail)
    return None


def _missing_camera(meta: Mapping[str, Any], message: str) -> str | None:
    """The camera resource of this pod (manifests.CAMERA_RESOURCES_ANNOTATION) that the scheduler's message calls
    insufficient (`0/4 nodes are available: 1 Insufficient korall.io/video0, 3 node(s) didn't match ...`)."""
    wanted = str((meta.get("annotations") or {}).get(CAMERA_RESOURCES_ANNOTATION) or "")
    for resource in filter(None, wanted.split(",")):
        if re.search(rf"Insufficient {re.escape(resource)}(?![\w.-])", message):
            return resource
    return None


def _readiness_loss(pod: Mapping[str, Any], container: str) -> tuple[str, str]:
    """(reason, what happened) of a lost readiness, by what the pod runs."""
    component = ((pod.get("metadata") or {}).get("labels") or {}).get("app.kubernetes.io/component")
    if component == COMPONENT_OF_KIND["InferenceModel"] and _has_env(pod, container, VisionEnv.CAPTURE_SOURCE):
        return CAMERA_UNAVAILABLE, "the camera stopped streaming"
    if component == COMPONENT_OF_KIND["CaptureProfile"]:
        return AUDIO_SOURCE_UNAVAILABLE, "the audio source stopped delivering audio"
    return READINESS_LOST, "the service stopped passing its readiness check"


def _has_env(pod: Mapping[str, Any], container: Any, variable: str) -> bool:
    for spec in (pod.get("spec") or {}).get("containers") or []:
        if spec.get("name") == container:
            return any(e.get("name") == variable for e in spec.get("env") or [])
    return False


def _time(value: Any) -> datetime.datetime | None:
    """An API timestamp (`2024-01-01T10:00:00Z`), or None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _container_problem(container: Mapping[str, Any], kind: str) -> tuple[str, str] | None:
    name = container.get("name", "?")
    state, last = container.get("state") or {}, container.get("lastState") or {}
    terminated = (state.get("terminated") or last.get("terminated") or {}) if kind == "init container" else {}
    if terminated and terminated.get("exitCode", 0) != 0:
        text = str(terminated.get("message") or "").strip()
        found = _REASON_IN_MESSAGE.match(text)
        if found:
            return found.group(1), f"{kind} {name}: {found.group(2)}"
        detail = f": {text}" if text else ""
        return "InitContainerFailed", f"{kind} {name} exited {terminated.get('exitCode')}{detail}"
    waiting = state.get("waiting") or {}
    if waiting.get("reason") not in STUCK_WAITING:
        return None
    message = f"{kind} {name}: {waiting['reason']}"
    if waiting.get("message"):
        message += f": {waiting['message']}"
    restarts = int(container.get("restartCount") or 0)
    ended = last.get("terminated") or {}
    if restarts:
        message += f"; restarted {restarts} times"
    if ended:
        message += f", last exit {ended.get('exitCode')} ({ended.get('reason') or 'Error'})"
        if ended.get("message"):
            message += f": {str(ended['message']).strip()[:300]}"
    return str(waiting["reason"]), message
