"""manifests/validation.py: the validation Job and the vision pods' self-test golden set (pure, no server).

Every manifest is also checked against the Kubernetes schemas (kubernetes-validate, strict)."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
from korall_contract import GOLDEN_SET_IN_IMAGE, VALIDATE_MODULE, ValidateEnv, VisionEnv, env_names
from korall_operator.manifests import build_vision_deployment
from korall_operator.manifests.validation import (
    JOB_ANNOTATION,
    SHA256_ANNOTATION,
    build_validation_job,
    validation_job_name,
    validation_link_secret,
)
from korall_operator.settings import OperatorSettings
from korall_operator.specs import InferenceModelSpec, parse_inference_model

CPU_MODEL = "mobilenet_ssd_v2_coco_quant_postprocess.tflite"
TPU_MODEL = "mobilenet_ssd_v2_coco_quant_postprocess_edgetpu.tflite"
CPU_SHA = "7046f31a72ec0045a57b94199144c96cf5840c7dc106b808b64a1ed5559aa0cd"
SHA = "ab" * 32
OWNER = {"apiVersion": "korall.io/v1alpha1", "kind": "InferenceModel", "metadata": {"name": "yard", "uid": "u-1"}}


def job(model: InferenceModelSpec, sha: str = SHA, generation: int = 3) -> dict[str, Any]:
    name = validation_job_name("yard", sha, "cfg12345", generation)
    built = build_validation_job(
        "yard", "ns", model, OperatorSettings(), job_name=name, sha256=sha, config="cfg12345", owner=OWNER
    )
    kubernetes_validate.validate(built, "1.34.0", strict=True)
    return built


def pod(manifest: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = manifest["spec"]["template"]["spec"]
    return spec


def env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}  # not the valueFrom ones


def test_a_bundled_model_is_validated_once_from_the_vision_image_without_privileges() -> None:
    built = job(parse_inference_model({"model": {"file": CPU_MODEL}}), CPU_SHA)
    spec, p = built["spec"], pod(built)
    assert (spec["backoffLimit"], spec["activeDeadlineSeconds"], spec["ttlSecondsAfterFinished"]) == (0, 900, 86400)
    assert p["restartPolicy"] == "Never" and p["automountServiceAccountToken"] is False
    (container,) = p["containers"]
    assert container["command"] == ["python", "-m", VALIDATE_MODULE]
    assert container["image"] == OperatorSettings().vision_image
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"  # the JSON result, or the last logs
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert p["securityContext"]["runAsNonRoot"] is True
    assert env(container) == {
        ValidateEnv.MODEL_PATH: f"/models/{CPU_MODEL}",
        ValidateEnv.MODEL_SHA256: CPU_SHA,
        ValidateEnv.ACCELERATOR: "cpu",
        ValidateEnv.LABELS_PATH: "/models/coco_labels.txt",
        ValidateEnv.MODELS_DIR: "/models",
        ValidateEnv.LOG_JSON: "true",
        ValidateEnv.GOLDEN_SET: GOLDEN_SET_IN_IMAGE,
    }
    assert set(env(container)) <= env_names(ValidateEnv)
    assert "initContainers" not in p
    owner = built["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("InferenceModel", "u-1", True)
    annotations = built["spec"]["template"]["metadata"]["annotations"]
    assert annotations[SHA256_ANNOTATION] == CPU_SHA and annotations[JOB_ANNOTATION] == built["metadata"]["name"]
    labels = built["spec"]["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/component"] == "validation"  # never mistaken for the serving pods
    assert labels["app.kubernetes.io/managed-by"] == "korall-operator"


def test_an_edge_tpu_model_is_validated_without_a_tpu() -> None:
    built = job(parse_inference_model({"model": {"file": TPU_MODEL}, "accelerator": "edgetpu"}))
    (container,) = pod(built)["containers"]
    assert env(container)[ValidateEnv.ACCELERATOR] == "edgetpu"
    assert "coral.ai/tpu" not in str(container["resources"]) and "privileged" not in str(container)
    assert not [v for v in pod(built)["volumes"] if "hostPath" in v and v["hostPath"]["path"].startswith("/dev")]


def test_an_s3_model_with_an_s3_twin_and_a_golden_set_at_a_url() -> None:
    model = parse_inference_model(
        {
            "model": {"s3": "s3://models/ssd_edgetpu.tflite", "sha256": SHA},
            "accelerator": "edgetpu",
            "validation": {
                "cpuTwin": {"s3": "s3://models/ssd.tflite", "sha256": "cd" * 32},
                "goldenSet": {"url": "https://models.example/golden.tar.gz", "sha256": "ef" * 32},
            },
        }
    )
    built = job(model)
    p = pod(built)
    assert [c["name"] for c in p["initContainers"]] == ["model-fetch", "golden-fetch", "twin-fetch"]
    volumes = {v["name"]: v for v in p["volumes"]}
    link = validation_link_secret(built["metadata"]["name"])
    assert volumes["model-link"]["secret"]["secretName"] == link  # not the serving model's link Secret
    assert volumes["twin-link"]["secret"] == {"secretName": link, "defaultMode": 0o440,
                                             "items": [{"key": "twin", "path": "url"}]}  # fmt: skip
    assert volumes["golden-cache"] == {"name": "golden-cache", "emptyDir": {"sizeLimit": "256Mi"}}
    (container,) = p["containers"]
    e = env(container)
    assert e[ValidateEnv.MODEL_PATH] == f"/var/lib/korall/models/sha256/{SHA}"
    assert e[ValidateEnv.TWIN_MODEL_PATH] == f"/var/lib/korall/models/sha256/{'cd' * 32}"
    assert e[ValidateEnv.GOLDEN_SET] == f"/var/lib/korall/golden/sha256/{'ef' * 32}"
    golden = env(p["initContainers"][1])
    assert golden["MODEL_URL"] == "https://models.example/golden.tar.gz" and golden["MODEL_SHA256"] == "ef" * 32


def test_a_bundled_twin_and_a_golden_set_from_a_configmap() -> None:
    model = parse_inference_model(
        {
            "model": {"url": "https://models.example/m_edgetpu.tflite", "sha256": SHA},
            "accelerator": "edgetpu",
            "validation": {"cpuTwin": {"file": CPU_MODEL}, "goldenSet": {"configMap": "yard-golden"}},
        }
    )
    p = pod(job(model))
    (container,) = p["containers"]
    e = env(container)
    assert (e[ValidateEnv.TWIN_MODEL_PATH], e[ValidateEnv.TWIN_MODEL_SHA256]) == (f"/models/{CPU_MODEL}", CPU_SHA)
    assert e[ValidateEnv.GOLDEN_SET] == "/var/run/korall/golden"
    assert {"name": "golden-set", "configMap": {"name": "yard-golden"}} in p["volumes"]


def test_one_job_per_model_settings_and_generation_with_a_valid_name() -> None:
    long = "m" * 250
    names = {validation_job_name(long, SHA, "cfg12345", g) for g in (1, 2)} | {
        validation_job_name(long, "cd" * 32, "cfg12345", 1),
        validation_job_name(long, SHA, "other999", 1),
    }
    assert len(names) == 4 and all(len(n) <= 63 for n in names)


@pytest.mark.parametrize(
    ("validation", "labels", "expected"),
    [
        ({}, "coco_labels.txt", GOLDEN_SET_IN_IMAGE),
        ({"goldenSet": {"configMap": "g"}}, "coco_labels.txt", "/var/run/korall/golden"),
        ({"selfTest": False}, "coco_labels.txt", None),
        ({}, "my_labels.txt", None),  # the default set expects COCO labels: no self-test without one's own set
    ],
)
def test_vision_pods_self_test_on_the_golden_set(validation: dict[str, Any], labels: str, expected: str | None) -> None:
    spec = parse_inference_model({"model": {"file": CPU_MODEL}, "validation": validation, "labels": labels})
    settings = OperatorSettings(vision_labels=["coco_labels.txt", "my_labels.txt"])
    deployment = build_vision_deployment("yard", "ns", spec, None, settings)
    (container,) = pod(deployment)["containers"]
    assert env(container).get(VisionEnv.SELF_TEST_GOLDEN_SET) == expected
