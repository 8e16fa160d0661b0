"""The validation Job of a model, and the golden set a vision pod self-tests on (pure; docs/catalog.md).

The Job runs `python -m korall_workloads.validate` from the vision image, once (`backoffLimit: 0`, no restart),
within `settings.validation_timeout_s` (`activeDeadlineSeconds`), and is deleted a while after it finished
(`ttlSecondsAfterFinished`); it is owned by its InferenceModel. It gets the model the way a vision pod does: a
bundled file from the image's /models, a downloaded one through the same `model-fetch` init container and node
cache (manifests/model_delivery.py), the link of an s3 model from a Secret of its own (`<job>-link`, signed for
this model: the model's own link Secret keeps the link of the model that serves). An Edge TPU build is checked
without a TPU (the Job asks for none: a TPU belongs to the pod that serves on it), with its CPU twin if the spec
names one (`twin-fetch` for a downloaded twin). The validator writes its JSON result as the termination message
(`terminationMessagePolicy: FallbackToLogsOnError`: a crash still leaves its last log lines there).

The golden set: the image's default one, a ConfigMap mounted read-only, or a tar archive at a URL fetched by a
`golden-fetch` init container (the model downloader: its sha256 is checked the same way) into an emptyDir. Vision
pods get the same golden set for their self-test (SELF_TEST_GOLDEN_SET), when it applies: the spec names one, or
the model uses the bundled COCO labels the default set expects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from korall_contract import (
    API_GROUP,
    DEFAULT_MODEL_CACHE_DIR,
    FETCH_MODULE,
    GOLDEN_SET_IN_IMAGE,
    MODELS_DIR_IN_IMAGE,
    VALIDATE_MODULE,
    FetchEnv,
    ValidateEnv,
    VisionEnv,
)

from korall_operator.manifests.model_delivery import cached_model_path, model_delivery
from korall_operator.manifests.naming import (
    INFERENCE_MODEL_LABEL,
    Manifest,
    child_name,
    label_value,
    object_metadata,
    workload_labels,
)
from korall_operator.manifests.pod import env_list, security_context
from korall_operator.settings import OperatorSettings
from korall_operator.specs import InferenceModelSpec, ValidationSpec

COMPONENT = "validation"
VALIDATOR_CONTAINER = "validate"
DEFAULT_LABELS = "coco_labels.txt"  # the labels the image's default golden set expects
GOLDEN_CONFIGMAP_DIR = "/var/run/korall/golden"
GOLDEN_CACHE_DIR = "/var/lib/korall/golden"

MODEL_NAME_ANNOTATION = f"{API_GROUP}/inference-model"
SHA256_ANNOTATION = f"{API_GROUP}/model-sha256"
JOB_ANNOTATION = f"{API_GROUP}/validation-job"
CONFIG_ANNOTATION = f"{API_GROUP}/validation-config"

_NO_PRIVILEGES = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}


@dataclass
class Wiring:
    """What a pod gets for one need: variables and mounts of its main container, volumes, init containers."""

    env: dict[str, Any] = field(default_factory=dict)
    volumes: list[dict[str, Any]] = field(default_factory=list)
    mounts: list[dict[str, Any]] = field(default_factory=list)
    init_containers: list[dict[str, Any]] = field(default_factory=list)


def validation_job_name(name: str, sha256: str, config: str, generation: int) -> str:
    """One Job per model, validation settings and spec generation (an Error is tried again on a new generation)."""
    return child_name(name, f"validate-{sha256[:8]}-{config[:4]}-{generation}")


def validation_link_secret(job: str) -> str:
    """The Secret holding the presigned link of the model (key `url`) or of its twin (key `twin`) an s3 Job fetches."""
    return f"{job}-link"


def golden_set_wiring(validation: ValidationSpec, settings: OperatorSettings) -> tuple[str, Wiring]:
    """Where the golden set is inside the pod, and what puts it there."""
    golden = validation.golden_set
    if golden is None:
        return GOLDEN_SET_IN_IMAGE, Wiring()
    if golden.config_map is not None:
        return GOLDEN_CONFIGMAP_DIR, Wiring(
            volumes=[{"name": "golden-set", "configMap": {"name": golden.config_map}}],
            mounts=[{"name": "golden-set", "mountPath": GOLDEN_CONFIGMAP_DIR, "readOnly": True}],
        )
    assert golden.url is not None and golden.sha256 is not None  # the spec's rules
    fetch = {
        "name": "golden-fetch",
        "image": settings.vision_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["python", "-m", FETCH_MODULE],
        "env": env_list(
            {
                FetchEnv.MODEL_URL: golden.url,
                FetchEnv.MODEL_SHA256: golden.sha256,
                FetchEnv.MODEL_CACHE_DIR: GOLDEN_CACHE_DIR,
                FetchEnv.MODEL_MAX_BYTES: settings.model_max_bytes,
                FetchEnv.LOG_JSON: settings.log_json,
            }
        ),
        "volumeMounts": [{"name": "golden-cache", "mountPath": GOLDEN_CACHE_DIR}],
        "securityContext": dict(_NO_PRIVILEGES),
        "terminationMessagePolicy": "File",
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
    }
    return f"{GOLDEN_CACHE_DIR}/sha256/{golden.sha256}", Wiring(
        volumes=[{"name": "golden-cache", "emptyDir": {"sizeLimit": "256Mi"}}],
        mounts=[{"name": "golden-cache", "mountPath": GOLDEN_CACHE_DIR, "readOnly": True}],
        init_containers=[fetch],
    )


def self_test_wiring(model: InferenceModelSpec, settings: OperatorSettings) -> Wiring | None:
    """The golden set a vision pod runs before it reports ready; None when none applies (self-test off, or a model
    with labels of its own and no golden set: the default set expects COCO labels)."""
    validation = model.validation
    if not validation.self_test or (validation.golden_set is None and model.labels != DEFAULT_LABELS):
        return None
    path, wiring = golden_set_wiring(validation, settings)
    wiring.env[VisionEnv.SELF_TEST_GOLDEN_SET] = path
    return wiring


def _renamed(part: dict[str, Any], old: str, new: str) -> dict[str, Any]:
    """A volume, mount or container with its name changed from `old` to `new` (a second fetch beside the first)."""
    return {**part, "name": new} if part.get("name") == old else part


def _twin_wiring(name: str, model: InferenceModelSpec, settings: OperatorSettings, link_secret: str) -> Wiring:
    twin = model.validation.cpu_twin
    if twin is None:
        return Wiring()
    if twin.file is not None:
        bundled = settings.model_file(twin.file)
        sha = twin.sha256 or (bundled.sha256 if bundled is not None else None)
        return Wiring(env={ValidateEnv.TWIN_MODEL_PATH: f"{MODELS_DIR_IN_IMAGE}/{twin.file}",
                           ValidateEnv.TWIN_MODEL_SHA256: sha})  # fmt: skip
    delivery = model_delivery(name, model.model_copy(update={"model": twin.as_source()}), settings, link_secret)
    assert delivery is not None and twin.sha256 is not None
    init = _renamed(delivery.init_containers[0], "model-fetch", "twin-fetch")
    init["volumeMounts"] = [_renamed(m, "model-link", "twin-link") for m in init["volumeMounts"]]
    volumes = [_renamed(v, "model-link", "twin-link") for v in delivery.volumes if v["name"] != "model-cache"]
    for volume in volumes:  # the twin's link is the `twin` key of the Job's link Secret
        if volume["name"] == "twin-link":
            volume["secret"] = {**volume["secret"], "items": [{"key": "twin", "path": "url"}]}
    return Wiring(
        env={ValidateEnv.TWIN_MODEL_PATH: cached_model_path(twin.sha256), ValidateEnv.TWIN_MODEL_SHA256: twin.sha256},
        volumes=volumes,
        init_containers=[init],
    )


def build_validation_job(
    name: str,
    namespace: str,
    model: InferenceModelSpec,
    settings: OperatorSettings,
    *,
    job_name: str,
    sha256: str,
    config: str,
    owner: Any = None,
) -> Manifest:
    """The Job that validates `model` (the spec's, whose sha256 is `sha256`) for InferenceModel `name`."""
    link_secret = validation_link_secret(job_name)
    delivery = model_delivery(name, model, settings, link_secret)
    env: dict[str, Any] = {
        ValidateEnv.MODEL_PATH: f"{MODELS_DIR_IN_IMAGE}/{model.model.file}",
        ValidateEnv.MODEL_SHA256: sha256,
        ValidateEnv.ACCELERATOR: model.accelerator,
        ValidateEnv.LABELS_PATH: f"{MODELS_DIR_IN_IMAGE}/{model.labels}",
        ValidateEnv.MODELS_DIR: MODELS_DIR_IN_IMAGE,
        ValidateEnv.LOG_JSON: settings.log_json,
    }
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {"sizeLimit": "512Mi"}}]
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]
    init_containers: list[dict[str, Any]] = []
    if delivery is not None:
        env[ValidateEnv.MODEL_PATH] = delivery.env[VisionEnv.MODEL_PATH]
        volumes += delivery.volumes
        mounts += delivery.mounts
        init_containers += delivery.init_containers
    golden_path, golden = golden_set_wiring(model.validation, settings)
    env[ValidateEnv.GOLDEN_SET] = golden_path
    twin = _twin_wiring(name, model, settings, link_secret)
    if twin.init_containers and delivery is None:  # a bundled model with a downloaded twin: the cache is the twin's
        volumes.append({"name": "model-cache", "emptyDir": {}})
        mounts.append({"name": "model-cache", "mountPath": DEFAULT_MODEL_CACHE_DIR, "readOnly": True})
        for init in twin.init_containers:
            init["securityContext"] = dict(_NO_PRIVILEGES)
    for part in (golden, twin):
        env.update(part.env)
        volumes += part.volumes
        mounts += part.mounts
        init_containers += part.init_containers
    pod_security, container_security = security_context(False, settings)
    container = {
        "name": VALIDATOR_CONTAINER,
        "image": settings.vision_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["python", "-m", VALIDATE_MODULE],
        "env": env_list(env),
        "volumeMounts": mounts,
        "securityContext": container_security,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
    }
    labels = workload_labels(name, COMPONENT, settings.vision_image, {INFERENCE_MODEL_LABEL: label_value(name)})
    annotations = {MODEL_NAME_ANNOTATION: name, SHA256_ANNOTATION: sha256, JOB_ANNOTATION: job_name,
                   CONFIG_ANNOTATION: config}  # fmt: skip
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security,
        "containers": [container],
        "volumes": volumes,
        "terminationGracePeriodSeconds": 5,
    }
    if init_containers:
        pod_spec["initContainers"] = init_containers
    meta = object_metadata(job_name, namespace, labels, owner)
    meta["annotations"] = dict(annotations)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta,
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": settings.validation_timeout_s,
            "ttlSecondsAfterFinished": settings.validation_ttl_s,
            "template": {"metadata": {"labels": dict(labels), "annotations": annotations}, "spec": pod_spec},
        },
    }
