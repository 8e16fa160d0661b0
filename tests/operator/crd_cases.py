"""Specs that the CRDs must accept or refuse, shared by the offline checks (test_crds.py: jsonschema and
cel-python) and the real API server (tests/realcluster/test_admission.py), so that both judge the same cases."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

from korall_operator.kube_names import NODE_SELECTOR_KEYS, RESOURCE_NAMES

CPU_MODEL = "mobilenet_ssd_v2_coco_quant_postprocess.tflite"
TPU_MODEL = "mobilenet_ssd_v2_coco_quant_postprocess_edgetpu.tflite"
SHA = "a" * 64

# Event delivery: a broker URL and a topic prefix the workload would refuse at start (its pods crash-looping) must be
# refused at admission; the bounds pass (korall_contract.mqtt; tests/test_contract.py walks them to the workload).
BROKER_URLS_REFUSED = ["mqtt://broker:0", "mqtt://broker:65536", "mqtt://broker:99999", "mqtt://broker:01883",
                       "mqtt://broker:", "mqtt://user@broker", "mqtt://broker/x", "mqtt://broker?x", "mqtt://[::1]",
                       "mqtt://-broker", "tcp://broker"]  # fmt: skip
BROKER_URLS_ADMITTED = ["mqtt://broker:1", "mqtts://broker.example:65535", "mqtt://10.0.0.7:1883/", "mqtt://Broker_1"]
TOPIC_PREFIXES_REFUSED = ["a//b", "korall/", "/x", "a/+/b", "korall/#", "a b", "a\tb", "a\x00"]
TOPIC_PREFIXES_ADMITTED = ["a/b/c", "ü/🔊", "site-1.korall"]


def _events(url: str = "mqtt://broker", topic_prefix: str | None = None, audio: bool = False) -> tuple[str, Any]:
    mqtt = {"url": url} if topic_prefix is None else {"url": url, "topicPrefix": topic_prefix}
    if audio:
        return ("CaptureProfile", {"type": "audio", "device": "hw:1,0", "audio": {}, "events": {"mqtt": mqtt}})
    return ("InferenceModel", {"model": {"file": CPU_MODEL}, "events": {"mqtt": mqtt}})


MQTT_REJECTS = [_events(url=u) for u in BROKER_URLS_REFUSED] + [
    _events(topic_prefix=t, audio=i % 2 == 1) for i, t in enumerate(TOPIC_PREFIXES_REFUSED)
]
MQTT_ACCEPTS = [_events(url=u, audio=i % 2 == 1) for i, u in enumerate(BROKER_URLS_ADMITTED)] + [
    _events(topic_prefix=t, audio=i % 2 == 1) for i, t in enumerate(TOPIC_PREFIXES_ADMITTED)
]


# The free-form maps are bounded (korall_operator.kube_names): kopf records the last spec it handled in an
# annotation, and a 360 KB nodeSelector overflowed the API server's 256 KB for annotations (retried for ever).
def label_key(i: int) -> str:
    """The longest label key (and resource name) Kubernetes takes: a 253-character prefix, '/', a 63-character name."""
    return f"{'p' * 63}.{'q' * 63}.{'r' * 63}.{'s' * 61}/{i:03d}{'n' * 60}"


LARGEST_NODE_SELECTOR = {label_key(i): f"{i:03d}{'v' * 60}" for i in range(64)}
# Extended resources: whole numbers, limits = requests, and a prefix of at most 244 characters (the API server checks
# `requests.<name>` as a qualified name: past the CRD's rule, a longer one is the pod template's ChildRejected).
LARGEST_RESOURCES = {label_key(i)[9:]: 1 for i in range(32)}


def _with(kind: str, **fields: Any) -> tuple[str, dict[str, Any]]:
    base = {"model": {"file": CPU_MODEL}} if kind == "InferenceModel" else {"type": "video", "video": {"source": "x"}}
    return (kind, {**base, **fields})


MAP_REJECTS = [
    _with("InferenceModel", nodeSelector={**LARGEST_NODE_SELECTOR, "one": "more"}),
    _with("CaptureProfile", nodeSelector={f"k{i}": "v" for i in range(65)}),
    _with("InferenceModel", nodeSelector={"zone": "v" * 64}),
    _with("CaptureProfile", nodeSelector={"zone": "a b"}),
    _with("InferenceModel", resources={"requests": {**LARGEST_RESOURCES, "cpu": 1}}),
    _with("InferenceModel", resources={"limits": {f"example.com/r{i}": 1 for i in range(33)}}),
    _with("InferenceModel", resources={"limits": {"memory": "1" + "0" * 64}}),
]
MAP_ACCEPTS = [
    _with("InferenceModel", nodeSelector=LARGEST_NODE_SELECTOR),
    _with("CaptureProfile", nodeSelector=LARGEST_NODE_SELECTOR),
    _with("CaptureProfile", nodeSelector={"kubernetes.io/hostname": "n1", "empty": ""}),
    _with("InferenceModel", resources={"requests": LARGEST_RESOURCES, "limits": LARGEST_RESOURCES}),
    _with("InferenceModel", resources={"limits": {"memory": "1" + "0" * 63}}),
]

SCHEMA_REJECTS = [
    *MAP_REJECTS,
    *MQTT_REJECTS,
    ("InferenceModel", {}),
    ("InferenceModel", {"model": {"file": CPU_MODEL}, "scoreThreshold": 1.01}),
    ("InferenceModel", {"model": {"file": CPU_MODEL}, "scoreThreshold": -0.1}),
    ("InferenceModel", {"model": {"file": CPU_MODEL}, "topK": 0}),
    ("InferenceModel", {"model": {"file": CPU_MODEL}, "topK": 101}),
    ("InferenceModel", {"model": {"file": CPU_MODEL}, "accelerator": "gpu"}),
    ("InferenceModel", {"model": {"file": CPU_MODEL}, "tpuInterface": "pcie"}),
    ("InferenceModel", {"model": {"file": CPU_MODEL}, "stage": "staging"}),
    ("InferenceModel", {"model": {"file": "model.onnx"}}),
    ("InferenceModel", {"model": {"file": "../../etc/passwd.tflite"}}),
    ("InferenceModel", {"model": {"url": "ftp://x/m.tflite", "sha256": SHA}}),
    ("InferenceModel", {"model": {"s3": "s3:/bucket", "sha256": SHA}}),
    ("InferenceModel", {"model": {"file": CPU_MODEL, "sha256": "ABC"}}),
    ("InferenceModel", {"model": {"file": CPU_MODEL}, "replicas": 101}),
    ("InferenceModel", {"model": {"file": CPU_MODEL}, "captureProfileRef": {}}),
    ("InferenceModel", {"model": {"file": CPU_MODEL}, "captureProfileRef": {"name": "Bad_Name"}}),
    ("InferenceModel", {"model": {"file": CPU_MODEL}, "nodeSelector": {"zone": 1}}),
    ("InferenceModel", {"model": {"file": CPU_MODEL}, "labels": "labels.csv"}),
    ("InferenceModel", {"model": {"file": CPU_MODEL}, "typo": True}),
    ("InferenceModel", {"model": {"file": CPU_MODEL}, "validation": {"rolloutDeadlineSeconds": 4}}),
    ("InferenceModel", {"model": {"file": CPU_MODEL}, "validation": {"goldenSet": {"configMap": "Bad_Name"}}}),
    ("CaptureProfile", {}),
    ("CaptureProfile", {"type": "radio"}),
    ("CaptureProfile", {"type": "video", "device": "/dev/video0", "video": {"width": 100}}),
    ("CaptureProfile", {"type": "video", "device": "/dev/video0", "video": {"fps": 0}}),
    ("CaptureProfile", {"type": "video", "device": "/dev/video0", "video": {"pixelFormat": "H264"}}),
    ("CaptureProfile", {"type": "video", "device": "/dev/video0", "video": {"sampleEvery": 0}}),
    ("CaptureProfile", {"type": "video", "device": "/dev/video0", "video": {"bufferFrames": 65}}),
    ("CaptureProfile", {"type": "audio", "device": "hw:1,0", "audio": {"chunkSeconds": 0.4}}),
    ("CaptureProfile", {"type": "audio", "device": "hw:1,0", "audio": {"chunkSeconds": 5.5}}),
    ("CaptureProfile", {"type": "audio", "device": "hw:1,0", "audio": {"sampleRate": 44000}}),
    ("CaptureProfile", {"type": "audio", "device": "hw:1,0", "audio": {"channels": 9}}),
    ("CaptureProfile", {"type": "audio", "device": "hw:1,0", "audio": {"thresholds": {"loudDbfs": 3}}}),
    ("InferenceModel", {"model": {"file": CPU_MODEL}, "auth": {"tokenSecretRef": {}}}),
    ("InferenceModel", {"model": {"file": CPU_MODEL}, "auth": {"tokenSecretRef": {"name": "Bad_Name"}}}),
    ("CaptureProfile", {"type": "video", "video": {"sourceSecretRef": {"name": "cam"}}}),
    ("CaptureProfile", {"type": "video", "video": {"sourceSecretRef": {"name": "cam", "key": "a/b"}}}),
]


SCHEMA_ACCEPTS = [
    *MAP_ACCEPTS,
    *MQTT_ACCEPTS,
    ("InferenceModel", {"model": {"file": CPU_MODEL}}),
    ("InferenceModel", {"model": {"url": "https://models.example/ssd.tflite", "sha256": SHA}}),
    ("InferenceModel", {"model": {"s3": "s3://models/ssd/v2.tflite", "sha256": SHA}}),
    (
        "InferenceModel",
        {
            "model": {"file": CPU_MODEL},
            "accelerator": "edgetpu",
            "tpuInterface": "pci",
            "scoreThreshold": 0,
            "topK": 100,
            "replicas": 0,
            "resources": {"requests": {"cpu": "250m", "memory": 134217728}, "limits": {"memory": "1Gi"}},
            "nodeSelector": {"kubernetes.io/hostname": "n1"},
            "captureProfileRef": {"name": "cam.front-1"},
            "stage": "production",
        },
    ),
    (
        "InferenceModel",
        {
            "model": {"url": "https://models.example/ssd_edgetpu.tflite", "sha256": SHA},
            "accelerator": "edgetpu",
            "validation": {
                "goldenSet": {"url": "https://models.example/golden.tar.gz", "sha256": SHA},
                "cpuTwin": {"s3": "s3://models/ssd.tflite", "sha256": SHA, "s3Credentials": "minio"},
                "selfTest": False,
                "rolloutDeadlineSeconds": 5,
            },
        },
    ),
    ("InferenceModel", {"model": {"file": CPU_MODEL}, "validation": {"goldenSet": {"configMap": "my-golden"}}}),
    ("CaptureProfile", {"type": "video", "video": {"source": "rtsp://cam/s"}}),
    ("CaptureProfile", {"type": "video", "video": {"sourceSecretRef": {"name": "yard-camera", "key": "url"}}}),
    ("InferenceModel", {"model": {"file": CPU_MODEL}, "auth": {"tokenSecretRef": {"name": "team-a.tokens"}}}),
    ("CaptureProfile", {"type": "audio", "device": "hw:1,0", "audio": {}, "auth": {"tokenSecretRef": {"name": "t"}}}),
    ("CaptureProfile", {"type": "video", "device": "/dev/video2", "video": {"pixelFormat": "YUYV", "fps": 120}}),
    ("CaptureProfile", {"type": "audio", "device": "hw:1,0", "audio": {"sampleRate": 48000, "chunkSeconds": 0.5}}),
]


# For every CEL rule (by its message): a spec the openAPI schema alone accepts but the rule forbids.
CEL_CASES: dict[str, tuple[str, dict[str, Any]]] = {
    NODE_SELECTOR_KEYS: _with("InferenceModel", nodeSelector={label_key(1) + "n": "v"}),  # a 64-character name
    RESOURCE_NAMES: _with("InferenceModel", resources={"requests": {"cpu": 1, "p" * 254 + "/tpu": 1}}),
    "tpuInterface may only be set when accelerator is edgetpu": (
        "InferenceModel",
        {"model": {"file": CPU_MODEL}, "accelerator": "cpu", "tpuInterface": "usb"},
    ),
    "exactly one of model.file, model.url or model.s3 must be set": (
        "InferenceModel",
        {"model": {"file": CPU_MODEL, "s3": "s3://models/k.tflite", "sha256": SHA}},
    ),
    "model.url and model.s3 require model.sha256": ("InferenceModel", {"model": {"url": "https://x/m.tflite"}}),
    "model.s3Credentials may only be set with model.s3": (
        "InferenceModel",
        {"model": {"url": "https://x/m.tflite", "sha256": SHA, "s3Credentials": "minio"}},
    ),
    "model.authHeaderSecret may only be set with model.url": (
        "InferenceModel",
        {"model": {"s3": "s3://models/m.tflite", "sha256": SHA, "authHeaderSecret": {"name": "a", "key": "h"}}},
    ),
    "validation.cpuTwin may only be set when accelerator is edgetpu": (
        "InferenceModel",
        {"model": {"file": CPU_MODEL}, "validation": {"cpuTwin": {"file": CPU_MODEL}}},
    ),
    "validation.goldenSet: exactly one of configMap or url must be set": (
        "InferenceModel",
        {
            "model": {"file": CPU_MODEL},
            "validation": {"goldenSet": {"configMap": "g", "url": "https://x/g.tar", "sha256": SHA}},
        },
    ),
    "validation.goldenSet.url requires validation.goldenSet.sha256": (
        "InferenceModel",
        {"model": {"file": CPU_MODEL}, "validation": {"goldenSet": {"url": "https://x/g.tar"}}},
    ),
    "validation.cpuTwin: exactly one of file, url or s3 must be set": (
        "InferenceModel",
        {"model": {"file": TPU_MODEL}, "accelerator": "edgetpu", "validation": {"cpuTwin": {"sha256": SHA}}},
    ),
    "validation.cpuTwin.url and validation.cpuTwin.s3 require validation.cpuTwin.sha256": (
        "InferenceModel",
        {
            "model": {"file": TPU_MODEL},
            "accelerator": "edgetpu",
            "validation": {"cpuTwin": {"url": "https://x/t.tflite"}},
        },
    ),
    "events.mqtt.clientCertificate needs events.mqtt.tlsSecret": (
        "InferenceModel",
        {"model": {"file": CPU_MODEL}, "events": {"mqtt": {"url": "mqtts://broker", "clientCertificate": True}}},
    ),
    "events may only be set on an audio profile (a camera's events come from its InferenceModel)": (
        "CaptureProfile",
        {"type": "video", "device": "/dev/video0", "video": {}, "events": {"mqtt": {"url": "mqtt://broker"}}},
    ),
    "type video requires a video block and no audio block": (
        "CaptureProfile",
        {"type": "video", "device": "/dev/video0", "audio": {}},
    ),
    "type audio requires an audio block and no video block": (
        "CaptureProfile",
        {"type": "audio", "device": "hw:1,0", "video": {}},
    ),
    "type video requires device, video.source or video.sourceSecretRef": (
        "CaptureProfile",
        {"type": "video", "video": {}},
    ),
    "video.source and video.sourceSecretRef are exclusive": (
        "CaptureProfile",
        {"type": "video", "video": {"source": "rtsp://cam/s", "sourceSecretRef": {"name": "cam", "key": "url"}}},
    ),
    "auth is for audio profiles; a camera's pod takes its InferenceModel's auth": (
        "CaptureProfile",
        {"type": "video", "device": "/dev/video0", "video": {}, "auth": {}},
    ),
    "a video device is a path under /dev/, e.g. /dev/video0": (
        "CaptureProfile",
        {"type": "video", "device": "video0", "video": {}},
    ),
    "type audio requires device (an ALSA name such as hw:1,0, or a WAV path)": (
        "CaptureProfile",
        {"type": "audio", "audio": {}},
    ),
    "audio.overlapSeconds must be below chunkSeconds": (
        "CaptureProfile",
        {"type": "audio", "device": "hw:1,0", "audio": {"chunkSeconds": 1, "overlapSeconds": 1}},
    ),
    "audio.thresholds.silenceDbfs must be below loudDbfs": (
        "CaptureProfile",
        {"type": "audio", "device": "hw:1,0", "audio": {"thresholds": {"silenceDbfs": -10, "loudDbfs": -30}}},
    ),
}


def inference_model_grid() -> Iterator[dict[str, Any]]:
    sources = {"file": CPU_MODEL, "url": "https://models.example/m.tflite", "s3": "s3://models/m.tflite", "sha256": SHA}
    for present in itertools.product([False, True], repeat=4):
        model = {k: v for (k, v), on in zip(sources.items(), present, strict=True) if on}
        for accelerator, interface in itertools.product([None, "cpu", "edgetpu"], [None, "usb", "pci"]):
            spec: dict[str, Any] = {"model": model}
            if accelerator:
                spec["accelerator"] = accelerator
            if interface:
                spec["tpuInterface"] = interface
            yield spec


def capture_profile_grid() -> Iterator[dict[str, Any]]:
    devices = [None, "/dev/video0", "hw:1,0"]
    videos = [None, {}, {"source": "rtsp://cam/s"}, {"sourceSecretRef": {"name": "cam", "key": "url"}}]
    audios = [None, {}, {"chunkSeconds": 1, "overlapSeconds": 1.5}, {"thresholds": {"silenceDbfs": -20}}]
    for kind, device, video, audio in itertools.product(["video", "audio"], devices, videos, audios):
        spec: dict[str, Any] = {"type": kind}
        for key, value in (("device", device), ("video", video), ("audio", audio)):
            if value is not None:
                spec[key] = value
        yield spec
