"""The parts every workload pod is built from: environment, probes, security context, host devices, affinity,
rollout strategy, and the Deployment and Service around a container (pure).

Devices (manifests/devices.py says how a pod gets them): a pod that opens a host device gets the host groups
that own device nodes (settings.device_groups) and, only with `privileged` access, a privileged container; every
other pod, and every device pod with `device-plugin` access (the default), runs as the images' non-root user with
a read-only root filesystem, all capabilities dropped and no privilege escalation.

Rollout strategy: a pod holding a TPU (or a camera / microphone, which one process opens at a time) uses
`Recreate`: a RollingUpdate surge pod could never schedule beside the old one on a node with one TPU (the extended
resource is exhausted) and the rollout would deadlock. CPU-only pods without devices roll with maxUnavailable 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from korall_operator.manifests.naming import Manifest, object_metadata, selector_labels, stamp
from korall_operator.settings import OperatorSettings

USB_BUS_PATH = "/dev/bus/usb"
PCI_APEX_PATH = "/dev/apex_0"
SOUND_PATH = "/dev/snd"


def env_list(pairs: Mapping[str, Any]) -> list[dict[str, str]]:
    out = []
    for key, value in pairs.items():
        if value is None:
            continue
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        out.append({"name": key, "value": text})
    return out


def probes(port_name: str) -> dict[str, Any]:
    """Readiness on /ready (model loaded and warmed up), liveness on /health; a startup probe covers the load."""
    return {
        "startupProbe": {
            "httpGet": {"path": "/health", "port": port_name},
            "periodSeconds": 2,
            "failureThreshold": 60,
            "timeoutSeconds": 2,
        },
        "readinessProbe": {
            "httpGet": {"path": "/ready", "port": port_name},
            "periodSeconds": 5,
            "failureThreshold": 2,
            "timeoutSeconds": 2,
        },
        "livenessProbe": {
            "httpGet": {"path": "/health", "port": port_name},
            "periodSeconds": 10,
            "failureThreshold": 3,
            "timeoutSeconds": 3,
        },
    }


def security_context(needs_device: bool, settings: OperatorSettings) -> tuple[dict[str, Any], dict[str, Any]]:
    """(pod securityContext, container securityContext): the smallest that works; see the module docstring.

    Every pod runs as the images' non-root user. A pod with a device also gets the host groups that own device
    nodes as supplementalGroups (the device cgroup decides whether the device may be opened at all, the file mode
    whether this user may); `device_run_as_user: 0` is the escape hatch for nodes whose device nodes are root-only.
    """
    pod: dict[str, Any] = {"seccompProfile": {"type": "RuntimeDefault"}}
    if needs_device and settings.device_run_as_user is not None:
        pod["runAsUser"] = settings.device_run_as_user
    else:
        pod.update(
            runAsNonRoot=True,
            runAsUser=settings.run_as_user,
            runAsGroup=settings.run_as_user,
            fsGroup=settings.run_as_user,
        )
    if needs_device and settings.device_groups:
        pod["supplementalGroups"] = list(settings.device_groups)
    if needs_device and settings.device_access == "privileged":
        # privileged is what opens the device cgroup for hostPath devices; it excludes allowPrivilegeEscalation=false
        return pod, {"privileged": True, "readOnlyRootFilesystem": True}
    container = {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    return pod, container


def host_device(volume: str, path: str, kind: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(volume, volumeMount) of a host device at the same path inside the container."""
    return {"name": volume, "hostPath": {"path": path, "type": kind}}, {"name": volume, "mountPath": path}


def tpu_affinity(interface: str, settings: OperatorSettings) -> dict[str, Any] | None:
    """A node whose TPU label names this interface, or a node without the label: the `coral.ai/tpu` request
    already finds the nodes with a TPU, so labelling (by hand or by Node Feature Discovery) is only needed where a
    cluster has both kinds; a node labelled for the other interface is never chosen. (Terms are ORed.)"""
    if not settings.tpu_node_label:
        return None
    terms = [
        {"matchExpressions": [{"key": settings.tpu_node_label, "operator": "In", "values": [interface]}]},
        {"matchExpressions": [{"key": settings.tpu_node_label, "operator": "DoesNotExist"}]},
    ]
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}


def strategy(exclusive_devices: bool) -> dict[str, Any]:
    if exclusive_devices:
        return {"type": "Recreate"}
    return {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}


def deployment_manifest(
    *,
    name: str,
    namespace: str,
    cr_name: str,
    component: str,
    labels: dict[str, str],
    replicas: int,
    container: dict[str, Any],
    volumes: list[dict[str, Any]],
    node_selector: dict[str, str],
    affinity: dict[str, Any] | None,
    pod_security: dict[str, Any],
    exclusive_devices: bool,
    template_annotations: dict[str, str],
    owner: Mapping[str, Any] | None,
    progress_deadline_s: int,
    init_containers: list[dict[str, Any]] | None = None,
) -> Manifest:
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security,
        "containers": [container],
        "volumes": volumes,
        "terminationGracePeriodSeconds": 15,
    }
    if init_containers:
        pod_spec["initContainers"] = init_containers
    if node_selector:
        pod_spec["nodeSelector"] = node_selector
    if affinity:
        pod_spec["affinity"] = affinity
    template = stamp(
        {"metadata": {"labels": dict(labels), "annotations": dict(template_annotations)}, "spec": pod_spec}
    )
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": object_metadata(name, namespace, labels, owner),
        "spec": {
            "replicas": replicas,
            "revisionHistoryLimit": 3,
            "progressDeadlineSeconds": progress_deadline_s,
            "selector": {"matchLabels": selector_labels(cr_name, component)},
            "strategy": strategy(exclusive_devices),
            "template": template,
        },
    }


def service_manifest(
    name: str, namespace: str, cr_name: str, component: str, labels: dict[str, str], port: int, owner: Any
) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_metadata(name, namespace, labels, owner),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(cr_name, component),
            "ports": [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}],
        },
    }
