"""The contract between the korall operator and its workloads.

The operator turns CRD fields into environment variables on the pods it builds; the workloads read the
same variables through their settings. Both sides import the names from here and from nowhere else, so a
rename is one edit and neither side ever imports the other. A variable that carries a CRD field also carries its
type, range, choices and default (`setting.Setting`), which the CRD schema, the operator's spec models and the
workload's settings all take from here. Keep this package free of third-party imports: it ships in all three
images.

- `env`: the variables of each workload (`VisionEnv`, `AudioEnv`, `FetchEnv`, `ValidateEnv`, `EventsEnv`, `HttpEnv`);
- `setting`: what a variable may hold;
- `mqtt`: what a broker URL and a topic prefix may be (event delivery), called by the operator and the workloads;
- here: the API group, ports and the paths both sides agree on.
"""

from __future__ import annotations

from typing import Final

from korall_contract.env import (
    Accelerator,
    AudioEnv,
    EventsEnv,
    FetchEnv,
    HttpEnv,
    PixelFormat,
    QoS,
    SampleRate,
    ScheduledAccelerator,
    ServiceEnv,
    TpuInterface,
    ValidateEnv,
    VisionEnv,
    env_names,
)
from korall_contract.mqtt import BrokerAddress, check_topic_level, check_topic_prefix, parse_broker_url
from korall_contract.setting import Setting, crd_settings, settings_of

API_GROUP: Final = "korall.io"
API_VERSION: Final = "v1alpha1"

VISION_PORT: Final = 5052
AUDIO_PORT: Final = 5053

MODELS_DIR_IN_IMAGE: Final = "/models"
"""Where the vision image keeps its bundled models; an InferenceModel's `model.file` is a name in here."""

DEFAULT_TPU_RESOURCE: Final = "coral.ai/tpu"
"""The extended resource a Coral device plugin advertises; pods that want a TPU request one of it."""

FETCH_MODULE: Final = "korall_workloads.fetch"
"""The model downloader in the vision image: the init container runs `python -m korall_workloads.fetch`."""

MODEL_HOLD_MODULE: Final = "korall_workloads.fetch.hold"
"""The vision pod's sidecar (`python -m korall_workloads.fetch.hold`): holds the pod's model in the node cache for
the pod's whole life, across restarts of the vision container. Reads FetchEnv.MODEL_CACHE_DIR and MODEL_SHA256."""

DEFAULT_MODEL_CACHE_DIR: Final = "/var/lib/korall/models"
"""Node-local, content-addressed model cache; a model lives at `<dir>/sha256/<hex digest>`."""

MODEL_CACHE_MAX_BYTES_LIMIT: Final = 1 << 40
MODEL_CACHE_KEEP_S_RANGE: Final = (60, 365 * 86400)
"""Bounds of the cache's budget (bytes; 0 = unbounded) and keep time (s): the downloader refuses what is outside,
so the operator's settings and the chart's schema hold to the same ones (FetchEnv.MODEL_CACHE_*)."""

MODEL_DOWNLOAD_FAILED: Final = "ModelDownloadFailed"
"""First word of the downloader's termination message on failure: `ModelDownloadFailed: <Reason>: <detail>`,
one line; <Reason> is one CamelCase word (ChecksumMismatch, LinkExpired, NotFound, ...; docs/model-delivery.md)."""

MODEL_FETCHED: Final = "ModelFetched"
"""First word of the downloader's termination message on success: `ModelFetched: sha256:<hex> <n> bytes (...)`."""


API_TOKENS_SECRET_KEY: Final = "tokens"
"""The key of the token Secret that holds the `name sha256:<hex> [scopes]` lines (docs/security.md)."""
VALIDATE_MODULE: Final = "korall_workloads.validate"
"""The model validator in the vision image: the operator's validation Job runs `python -m korall_workloads.validate`."""

GOLDEN_SET_IN_IMAGE: Final = "/models/golden"
"""The default golden set the vision image ships (licensed photos with the COCO labels they must yield)."""

VALIDATION_RESULT_SCHEMA: Final = "korall.validation.v1"
"""The `schema` of the validator's result: one compact JSON object, its termination message (at most
MAX_TERMINATION_MESSAGE bytes): `{"schema", "sha256", "result": Passed|Failed|Error, "reason", "message",
"durationSeconds", "checks": {...}, "images": [{"image", "expect", "minScore", "found": [[label, score], ...],
"passed"}], "omitted": n}` (docs/catalog.md)."""

MAX_TERMINATION_MESSAGE: Final = 4096
"""Bytes of a container's termination message that Kubernetes keeps."""


SPOOL_DIR_IN_POD: Final = "/var/lib/korall/spool"
"""Where the workloads keep their event spool by default; the operator mounts the node's spool folder here."""


__all__ = [
    "API_GROUP",
    "API_TOKENS_SECRET_KEY",
    "API_VERSION",
    "AUDIO_PORT",
    "DEFAULT_MODEL_CACHE_DIR",
    "DEFAULT_TPU_RESOURCE",
    "FETCH_MODULE",
    "GOLDEN_SET_IN_IMAGE",
    "MAX_TERMINATION_MESSAGE",
    "MODELS_DIR_IN_IMAGE",
    "MODEL_CACHE_KEEP_S_RANGE",
    "MODEL_CACHE_MAX_BYTES_LIMIT",
    "MODEL_DOWNLOAD_FAILED",
    "MODEL_FETCHED",
    "MODEL_HOLD_MODULE",
    "SPOOL_DIR_IN_POD",
    "VALIDATE_MODULE",
    "VALIDATION_RESULT_SCHEMA",
    "VISION_PORT",
    "Accelerator",
    "AudioEnv",
    "BrokerAddress",
    "EventsEnv",
    "FetchEnv",
    "HttpEnv",
    "PixelFormat",
    "QoS",
    "SampleRate",
    "ScheduledAccelerator",
    "ServiceEnv",
    "Setting",
    "TpuInterface",
    "ValidateEnv",
    "VisionEnv",
    "check_topic_level",
    "check_topic_prefix",
    "crd_settings",
    "env_names",
    "parse_broker_url",
    "settings_of",
]
