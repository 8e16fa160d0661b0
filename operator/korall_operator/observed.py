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

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from korall_operator.manifests import CAMERA_RESOURCES_ANNOTATION, MODEL_ANNOTATION, SPEC_HASH_ANNOTATION, label_value

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
    kept = {k: annotations[k] for k in (SPEC_HASH_ANNOTATION, MODEL_ANNOTATION) if k in annotations}
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
      CamelCase word and a colon (`ModelDownloadFailed: ...`, as korall's init containers write it);
    - the scheduler's Unschedulable, with its message (`0/3 nodes are available: 3 Insufficient coral.ai/tpu`).
    A pod being deleted has no problem worth reporting.
    """
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    name = str(meta.get("name", "?"))
    if meta.get("deletionTimestamp"):
        return None
    for key, kind in (("initContainerStatuses", "init container"), ("containerStatuses", "container")):
        for container in status.get(key) or []:
            problem = _container_problem(container, kind)
            if problem is not None:
                reason, message = problem
                return PodProblem(name, reason, f"pod {name}: {message}")
    for cond in status.get("conditions") or []:
        unschedulable = cond.get("status") == "False" and cond.get("reason") == "Unschedulable"
        if cond.get("type") == "PodScheduled" and unschedulable:
            message = str(cond.get("message") or "unschedulable")
            return PodProblem(name, "Unschedulable", f"pod {name}: {message}", _missing_camera(meta, message))
    return None


def _missing_camera(meta: Mapping[str, Any], message: str) -> str | None:
    """The camera resource of this pod (manifests.CAMERA_RESOURCES_ANNOTATION) that the scheduler's message calls
    insufficient (`0/4 nodes are available: 1 Insufficient korall.io/video0, 3 node(s) didn't match ...`)."""
    wanted = str((meta.get("annotations") or {}).get(CAMERA_RESOURCES_ANNOTATION) or "")
    for resource in filter(None, wanted.split(",")):
        if re.search(rf"Insufficient {re.escape(resource)}(?![\w.-])", message):
            return resource
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
