"""The chart's device side (issue 16), rendered by a real helm: the device plugin DaemonSet and its configuration,
the TPU waker, the Node Feature Discovery rules, and what the operator is told. Least privilege is asserted
field by field; every object is also validated against the Kubernetes schemas (test_chart.py), and the plugin's
configuration against the format squat/generic-device-plugin parses (its DeviceSpec, Group, Path and USBSpec
types, written out below as a JSON schema).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from test_chart import CHART, K8S_VERSION, by_kind, helm, operator_container, render, tools_bin

__all__ = ["tools_bin"]  # the session fixture, shared with test_chart.py

NAME = r"^[a-z0-9][-a-z0-9]*[a-z0-9]$"  # the plugin refuses any other device name
PLUGIN_DEVICE = {  # squat/generic-device-plugin's DeviceSpec, as its --device flag takes it (JSON is YAML)
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "groups"],
    "properties": {
        "name": {"type": "string", "pattern": NAME},
        "groups": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "count": {"type": "integer", "minimum": 1},
                    "paths": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["path"],
                            "properties": {
                                "path": {"type": "string"},
                                "mountPath": {"type": "string"},
                                "permissions": {"type": "string"},
                                "readOnly": {"type": "boolean"},
                                "type": {"enum": ["Device", "Mount"]},
                                "limit": {"type": "integer"},
                            },
                        },
                    },
                    "usb": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["vendor", "product"],
                            "properties": {
                                "vendor": {"type": "string", "pattern": "^[0-9a-f]{4}$"},
                                "product": {"type": "string", "pattern": "^[0-9a-f]{4}$"},
                                "serial": {"type": "string"},
                            },
                        },
                    },
                },
                # "cannot define both path and usb at the same time"
                "not": {"required": ["paths", "usb"]},
            },
        },
    },
}


def daemonset(docs: list[dict[str, Any]], suffix: str) -> dict[str, Any]:
    (found,) = [d for d in by_kind(docs).get("DaemonSet", []) if d["metadata"]["name"].endswith(suffix)]
    return found


def plugin_processes(docs: list[dict[str, Any]]) -> dict[str, tuple[str, dict[str, Any]]]:
    """Each plugin container's domain and devices: {resource name: (container, device spec)}."""
    out = {}
    for container in daemonset(docs, "-device-plugin")["spec"]["template"]["spec"]["containers"]:
        args = container["args"]
        (domain,) = [a.removeprefix("--domain=") for a in args if a.startswith("--domain=")]
        for arg in args:
            if arg.startswith("--device="):
                spec = json.loads(arg.removeprefix("--device="))
                jsonschema.validate(spec, PLUGIN_DEVICE)
                out[f"{domain}/{spec['name']}"] = (container["name"], spec)
    return out


def test_the_plugin_advertises_the_tpu_every_camera_and_the_microphone(tools_bin: Path) -> None:
    devices = plugin_processes(render(tools_bin))
    cameras = {f"korall.io/video{n}": {"groups": [{"paths": [{"path": f"/dev/video{n}"}]}]} for n in range(8)}
    assert {name: {"groups": spec["groups"]} for name, (_, spec) in devices.items()} == {
        # the USB Accelerator by its application id (the waker wakes the boot id 1a6e:089a), and each PCIe TPU
        "coral.ai/tpu": {
            "groups": [{"usb": [{"vendor": "18d1", "product": "9302"}]}, {"paths": [{"path": "/dev/apex_*"}]}]
        },
        **cameras,
        "korall.io/snd": {"groups": [{"paths": [{"path": "/dev/snd"}]}]},
    }
    assert {container for container, _ in devices.values()} == {"tpu", "camera", "microphone"}


def test_the_resource_names_follow_the_values(tools_bin: Path) -> None:
    docs = render(
        tools_bin,
        "tpu.resource=example.com/edgetpu",
        "camera.resourcePrefix=example.com/cam-",
        "microphone.resource=",
        "devicePlugin.videoDevices=2",
    )
    assert sorted(plugin_processes(docs)) == ["example.com/cam-0", "example.com/cam-1", "example.com/edgetpu"]
    env = {e["name"]: e["value"] for e in operator_container(docs)["env"] if "value" in e}
    assert env["KORALL_TPU_RESOURCE"] == "example.com/edgetpu"
    assert env["KORALL_CAMERA_RESOURCE_PREFIX"] == "example.com/cam-"
    assert env["KORALL_MICROPHONE_RESOURCE"] == ""


def test_the_plugin_runs_with_the_least_it_needs(tools_bin: Path) -> None:
    docs = render(tools_bin)
    plugin = daemonset(docs, "-device-plugin")
    kubernetes_validate.validate(plugin, K8S_VERSION, strict=True)
    pod = plugin["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False and "serviceAccountName" not in pod  # it never calls the API
    assert pod["securityContext"] == {"seccompProfile": {"type": "RuntimeDefault"}}
    assert "hostNetwork" not in pod and "hostPID" not in pod
    assert pod["volumes"] == [
        {"name": "device-plugins", "hostPath": {"path": "/var/lib/kubelet/device-plugins", "type": "Directory"}},
        {"name": "dev", "hostPath": {"path": "/dev", "type": "Directory"}},
    ]
    for container in pod["containers"]:
        # root for the kubelet's root-owned socket folder, and nothing else: it never opens a device
        assert container["securityContext"] == {
            "runAsUser": 0,
            "runAsNonRoot": False,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        }
        assert container["volumeMounts"] == [
            {"name": "device-plugins", "mountPath": "/var/lib/kubelet/device-plugins"},
            {"name": "dev", "mountPath": "/dev", "readOnly": True},
        ]
        assert not container["terminationMessagePath"].startswith("/dev/")  # the host's /dev is read-only there
        assert container["image"].startswith("ghcr.io/squat/generic-device-plugin:0.2.0@sha256:")
        assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert len({c["ports"][0]["containerPort"] for c in pod["containers"]}) == len(pod["containers"])
    # no RBAC at all for it: every role binding names the operator's ServiceAccount only
    for binding in by_kind(docs)["ClusterRoleBinding"]:
        assert [s["name"] for s in binding["subjects"]] == ["korall"]
    privileged = daemonset(render(tools_bin, "devicePlugin.privileged=true"), "-device-plugin")
    for container in privileged["spec"]["template"]["spec"]["containers"]:
        assert container["securityContext"] == {"privileged": True}


def test_the_tpu_waker_is_the_one_privileged_pod_and_has_nothing_else(tools_bin: Path) -> None:
    docs = render(tools_bin)
    wake = daemonset(docs, "-tpu-wake")
    pod = wake["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "ghcr.io/korall-project/korall-vision:0.1.0"  # it has libedgetpu
    assert container["command"] == ["python", "-m", "korall_workloads.vision.tpu_wake"]
    assert container["args"] == ["--group=46", "--interval=2"]
    assert container["securityContext"] == {"privileged": True, "runAsUser": 0, "readOnlyRootFilesystem": True}
    assert "ports" not in container and pod["automountServiceAccountToken"] is False
    assert [v.get("hostPath", {}).get("path") for v in pod["volumes"]] == ["/dev/bus/usb", None]
    # the workloads themselves are never privileged by default
    env = {e["name"]: e["value"] for e in operator_container(docs)["env"] if "value" in e}
    assert env["KORALL_DEVICE_ACCESS"] == "device-plugin"
    # the group must be one the device pods have
    out = helm(tools_bin, "template", "k", str(CHART), "--set", "devicePlugin.tpuWake.group=7", check=False)
    assert out.returncode != 0 and "devicePlugin.tpuWake.group 7 must be one of workloads.deviceGroups" in out.stderr


@pytest.mark.parametrize(
    ("sets", "camera", "microphone"),
    [
        # no plugin at all: privileged hostPath devices, and no camera or microphone resource that none advertises
        (("devicePlugin.enabled=false", "tpu.deviceAccess=privileged"), "", ""),
        # a plugin of the cluster's own: the same names are requested
        (("devicePlugin.enabled=false",), "korall.io/video", "korall.io/snd"),
    ],
)
def test_without_the_chart_plugin(tools_bin: Path, sets: tuple[str, ...], camera: str, microphone: str) -> None:
    docs = render(tools_bin, *sets)
    assert "DaemonSet" not in by_kind(docs)
    env = {e["name"]: e["value"] for e in operator_container(docs)["env"] if "value" in e}
    assert (env["KORALL_CAMERA_RESOURCE_PREFIX"], env["KORALL_MICROPHONE_RESOURCE"]) == (camera, microphone)


def test_node_feature_rules_label_both_ids_and_pcie(tools_bin: Path) -> None:
    assert "NodeFeatureRule" not in by_kind(render(tools_bin))  # an option: NFD is installed separately
    (rule,) = by_kind(render(tools_bin, "nodeFeatureDiscovery.rules=true"))["NodeFeatureRule"]
    assert rule["apiVersion"] == "nfd.k8s-sigs.io/v1alpha1" and "namespace" not in rule["metadata"]
    usb, pci = rule["spec"]["rules"]
    assert usb["labels"] == {"korall.io/tpu": "usb"} and pci["labels"] == {"korall.io/tpu": "pci"}
    ids = [
        (
            m["matchFeatures"][0]["matchExpressions"]["vendor"]["value"],
            m["matchFeatures"][0]["matchExpressions"]["device"]["value"],
        )
        for m in usb["matchAny"]
    ]
    assert ids == [(["1a6e"], ["089a"]), (["18d1"], ["9302"])]
    assert all(m["matchFeatures"][0]["feature"] == "usb.device" for m in usb["matchAny"])
    pcie = pci["matchFeatures"][0]
    assert pcie["feature"] == "pci.device"
    assert (pcie["matchExpressions"]["vendor"]["value"], pcie["matchExpressions"]["device"]["value"]) == (
        ["1ac1"],
        ["089a"],
    )


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        ("devicePlugin.image.tag=latest", "/devicePlugin/image/tag"),
        ("devicePlugin.image.digest=sha256:abc", "/devicePlugin/image/digest"),
        ("camera.resourcePrefix=not a prefix", "/camera/resourcePrefix"),
        ("microphone.resource=korall.io/snd-", "/microphone/resource"),
        ("devicePlugin.videoDevices=-1", "/devicePlugin/videoDevices"),
        ("devicePlugin.tpuGroups[0].usb[0].vendor=XYZ", "/devicePlugin/tpuGroups/0/usb/0/vendor"),
    ],
)
def test_values_schema_rejects_bad_device_values(tools_bin: Path, value: str, complaint: str) -> None:
    out = helm(tools_bin, "template", "k", str(CHART), "--set", value, check=False)
    assert out.returncode != 0
    assert complaint in out.stderr


def test_a_tpu_group_with_both_paths_and_usb_is_refused(tools_bin: Path, tmp_path: Path) -> None:
    values = tmp_path / "both.yaml"
    group = {"paths": [{"path": "/dev/apex_*"}], "usb": [{"vendor": "18d1", "product": "9302"}]}
    values.write_text(yaml.safe_dump({"devicePlugin": {"tpuGroups": [group]}}))
    out = helm(tools_bin, "template", "k", str(CHART), "-f", str(values), check=False)
    assert out.returncode != 0 and "/devicePlugin/tpuGroups/0" in out.stderr
