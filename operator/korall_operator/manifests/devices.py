"""How a workload pod gets the host devices it opens, TPU, camera or microphone (pure).

Two ways, `settings.device_access`:

- `device-plugin` (the default; the chart installs squat/generic-device-plugin, charts/korall/templates/
  device-plugin.yaml): every device is an extended resource the pod requests, one `coral.ai/tpu`, one
  `korall.io/videoN` per camera node /dev/videoN, one `korall.io/snd` for the node's sound devices. The
  scheduler places the pod where the device is free, and refuses a second pod for the same one; the kubelet asks
  the plugin, whose allocation adds exactly those device nodes to the container and opens the device cgroup for
  them. No hostPath and no privilege: the container runs as the images' user, every capability dropped, and the
  host groups that own the nodes come as supplementalGroups (pod.security_context).
  The USB accelerator needs one more thing, done on the node and not here: it enumerates as 1a6e:089a, loads
  its firmware on first use and comes back as 18d1:9302 under a NEW node, which no allocation made before can
  cover (a device cgroup rule names one major:minor). The chart's TPU waker (a privileged DaemonSet on the node,
  korall_workloads.vision.tpu_wake) loads the firmware first and the plugin advertises the accelerator only as
  18d1:9302; from then on its node stays the same.
- `privileged` (the opt-in for clusters that cannot run a plugin): hostPath mounts of the device nodes
  (/dev/bus/usb whole, since the accelerator re-enumerates; /dev/apex_0; /dev/videoN; /dev/snd) and a privileged
  container, since a hostPath only makes a node visible: the device cgroup still refuses to open it, and
  Kubernetes has no pod field for a device cgroup rule. This is what Coral's Docker instructions and Frigate's
  chart do. The TPU is still requested as `coral.ai/tpu` (a plugin that only counts TPUs will do); cameras and
  microphones are requested only if their resource names are set (the chart clears them without a plugin).

One camera, one pod: a camera is requested per device node, so the pod of a profile that names /dev/video2 gets
/dev/video2 and no other, and a second pod that wants it stays Pending ("Insufficient korall.io/video2"); the
operator reports that on the second model as CameraInUse (korall_operator.camera_use). The resources a pod wants
for its cameras are written on its template (CAMERA_RESOURCES_ANNOTATION) so that this can be read off the pod.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from korall_contract import API_GROUP

from korall_operator.manifests.pod import PCI_APEX_PATH, SOUND_PATH, USB_BUS_PATH, host_device
from korall_operator.settings import OperatorSettings
from korall_operator.specs import SpecError

CAMERA_NODE = re.compile(r"^/dev/video(0|[1-9][0-9]*)$")  # as the kernel names them: no leading zero
CAMERA_RESOURCES_ANNOTATION = f"{API_GROUP}/camera-resources"
"""On a pod template: the camera resources its pod requests, comma-separated (observed.pod_problem reads it)."""


@dataclass(frozen=True)
class Devices:
    """What a pod needs for its devices: extended-resource limits, and hostPath volumes with their mounts
    (privileged access only). `opens_device`: the pod opens a host device at all (its security context and its
    rollout strategy depend on it)."""

    limits: dict[str, str] = field(default_factory=dict)
    volumes: list[dict[str, Any]] = field(default_factory=list)
    mounts: list[dict[str, Any]] = field(default_factory=list)
    camera_resources: tuple[str, ...] = ()
    opens_device: bool = False

    def __add__(self, other: Devices) -> Devices:
        return Devices(
            limits={**self.limits, **other.limits},
            volumes=self.volumes + other.volumes,
            mounts=self.mounts + other.mounts,
            camera_resources=self.camera_resources + other.camera_resources,
            opens_device=self.opens_device or other.opens_device,
        )

    def add_to(self, resources: dict[str, Any]) -> None:
        """Put the device limits into a container's `resources` ({"requests": ..., "limits": ...}, changed in
        place). An extended resource's request defaults to its limit and may not differ from it, so a request
        the user wrote for one is dropped."""
        for name, quantity in self.limits.items():
            resources.setdefault("limits", {})[name] = quantity
            resources.get("requests", {}).pop(name, None)


def _plugin_grants(settings: OperatorSettings) -> bool:
    return settings.device_access == "device-plugin"


def tpu_devices(interface: str, settings: OperatorSettings) -> Devices:
    """One Edge TPU over `usb` or `pci` (check_vision_spec has refused an empty settings.tpu_resource)."""
    limits = {settings.tpu_resource: "1"}  # a quantity: the API server returns it as a string
    if _plugin_grants(settings):
        return Devices(limits=limits, opens_device=True)
    if interface == "usb":  # the whole bus: the accelerator re-enumerates under a new node
        volume, mount = host_device("edgetpu-usb", USB_BUS_PATH, "Directory")
    else:
        volume, mount = host_device("edgetpu-pci", PCI_APEX_PATH, "CharDevice")
    return Devices(limits=limits, volumes=[volume], mounts=[mount], opens_device=True)


def camera_resource(path: str, settings: OperatorSettings) -> str | None:
    """The extended resource of camera node `path` (/dev/video2 -> korall.io/video2), None when there is none."""
    found = CAMERA_NODE.match(path)
    if not found or not settings.camera_resource_prefix:
        return None
    return f"{settings.camera_resource_prefix}{int(found.group(1))}"


def camera_devices(paths: Iterable[str], settings: OperatorSettings) -> Devices:
    """The camera nodes a capture source opens (vision.devices_of_source)."""
    total = Devices()
    for index, path in enumerate(paths):
        resource = camera_resource(path, settings)
        limits = {resource: "1"} if resource else {}
        cameras = (resource,) if resource else ()
        if _plugin_grants(settings):
            if resource is None:
                raise _camera_not_grantable(path, settings)
            total += Devices(limits=limits, camera_resources=cameras, opens_device=True)
            continue
        volume, mount = host_device("camera" if index == 0 else f"camera-{index}", path, "CharDevice")
        total += Devices(limits=limits, volumes=[volume], mounts=[mount], camera_resources=cameras, opens_device=True)
    return total


def _camera_not_grantable(path: str, settings: OperatorSettings) -> SpecError:
    if not settings.camera_resource_prefix:
        return SpecError(
            "CameraResourceNotConfigured",
            f"the camera {path} would come from a device plugin (KORALL_DEVICE_ACCESS=device-plugin), but no camera "
            "resource is configured (KORALL_CAMERA_RESOURCE_PREFIX is empty): set the chart's camera.resourcePrefix, "
            "or use tpu.deviceAccess=privileged",
        )
    return SpecError(
        "CameraNotSchedulable",
        f"the device plugin grants a camera by its /dev/videoN node (as {settings.camera_resource_prefix}N), and "
        f"{path} is not one: name the /dev/videoN node in the CaptureProfile, or use tpu.deviceAccess=privileged",
    )


def sound_devices(settings: OperatorSettings) -> Devices:
    """The node's sound devices, for an ALSA name (hw:1,0, default, ...): which /dev/snd nodes ALSA opens for a
    name depends on the host's ALSA configuration, so the microphone is the whole /dev/snd, one pod per node."""
    limits = {settings.microphone_resource: "1"} if settings.microphone_resource else {}
    if _plugin_grants(settings):
        if not limits:
            raise SpecError(
                "MicrophoneResourceNotConfigured",
                "the microphone would come from a device plugin (KORALL_DEVICE_ACCESS=device-plugin), but no "
                "microphone resource is configured (KORALL_MICROPHONE_RESOURCE is empty): set the chart's "
                "microphone.resource, or use tpu.deviceAccess=privileged",
            )
        return Devices(limits=limits, opens_device=True)
    volume, mount = host_device("sound", SOUND_PATH, "Directory")
    return Devices(limits=limits, volumes=[volume], mounts=[mount], opens_device=True)
