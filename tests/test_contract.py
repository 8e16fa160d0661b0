"""One contract from the CRDs to the workloads: what the API server admits, the workload accepts.

For every variable that carries a CRD field (`korall_contract.crd_settings`), every value at an edge of what the
CRD allows (minimum, maximum, default, each choice) is put in a spec, judged as the API server judges it (schema
and CEL: tests/operator/test_crds.py, which the real-cluster tier holds to the real server), turned into a pod by the
operator's own builders, and the pod's environment read by the workload's own settings. An admitted value must
arrive unchanged; only combinations the CRD itself refuses (a silence floor above the loud level) are left out.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
from crd_cases import (
    BROKER_URLS_ADMITTED,
    BROKER_URLS_REFUSED,
    TOPIC_PREFIXES_ADMITTED,
    TOPIC_PREFIXES_REFUSED,
)
from korall_contract import AudioEnv, EventsEnv, Setting, VisionEnv, crd_settings
from korall_contract.mqtt import BROKER_URL_PATTERN, TOPIC_PREFIX_PATTERN
from korall_operator.manifests import build_audio_deployment, build_vision_deployment
from korall_operator.settings import OperatorSettings
from korall_operator.specs import SpecError, parse_capture_profile, parse_inference_model
from korall_tools import crds
from korall_workloads.audio.settings import AudioSettings
from korall_workloads.common.event_settings import EventsSettings
from korall_workloads.vision.camera.settings import CaptureSettings
from korall_workloads.vision.settings import VisionSettings
from pydantic import ValidationError
from test_crds import admitted

CPU_MODEL = "mobilenet_ssd_v2_coco_quant_postprocess.tflite"
TPU_MODEL = "mobilenet_ssd_v2_coco_quant_postprocess_edgetpu.tflite"
SETTINGS = crd_settings(VisionEnv, AudioEnv, EventsEnv)

# What a spec needs besides the field under test (the partner of a paired rule at its widest, so that the field's
# own extremes are admitted: overlap may reach 2.5 s only with chunks longer than that).
BASES: dict[str, dict[str, Any]] = {
    "InferenceModel": {"model": {"file": CPU_MODEL}, "captureProfileRef": {"name": "cam"}},
    "CaptureProfile:video": {"type": "video", "device": "/dev/video0", "video": {}},
    "CaptureProfile:audio": {"type": "audio", "device": "hw:1,0", "audio": {"chunkSeconds": 5.0}},
    "CaptureProfile:events": {"type": "audio", "device": "hw:1,0", "audio": {}},
}
BROKER = "mqtt://broker.example"


def edge_values(setting: Setting) -> list[Any]:
    values = [setting.minimum, setting.maximum, setting.crd_default, *(setting.crd_choices or ())]
    if setting == EventsEnv.MQTT_URL:  # a string with a pattern: its two schemes, the ports at either end
        values += [BROKER, "mqtts://broker.example:8883", *BROKER_URLS_ADMITTED]
    if setting == EventsEnv.TOPIC_PREFIX:  # several levels, and text outside ASCII
        values += TOPIC_PREFIXES_ADMITTED
    return [v for i, v in enumerate(values) if v is not None and v not in values[:i]]


# A paired rule's partner at the end that leaves the field under test its whole range.
PARTNERS: dict[str, dict[str, Any]] = {
    AudioEnv.AUDIO_LOUD_DBFS: {"silenceDbfs": -120},
    AudioEnv.AUDIO_SILENCE_DBFS: {"loudDbfs": 0},
}


def spec_with(setting: Setting, value: Any, field: int = 0) -> tuple[str, dict[str, Any]]:
    """A spec with the setting's `field`-th CRD field at `value`, and its kind."""
    kind, path = setting.crd_fields[field]
    base_key = kind if kind == "InferenceModel" else f"{kind}:{path[0]}"
    spec: dict[str, Any] = copy.deepcopy(BASES[base_key])
    if setting in PARTNERS:
        spec["audio"]["thresholds"] = dict(PARTNERS[setting])
    if path[0] == "events":
        spec["events"] = {"mqtt": {"url": BROKER}}
    if kind == "InferenceModel" and setting == VisionEnv.EDGETPU_DEVICE:  # an interface needs a TPU model
        spec.update(model={"file": TPU_MODEL}, accelerator="edgetpu")
    if kind == "InferenceModel" and setting == VisionEnv.ACCELERATOR and value == "edgetpu":
        spec["model"] = {"file": TPU_MODEL}
    node = spec
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value
    return kind, spec


def pod_env(kind: str, spec: dict[str, Any]) -> dict[str, str]:
    """The environment of the pod the operator builds: a video profile reaches the pod of a model that uses it."""
    settings = OperatorSettings()
    if kind == "InferenceModel":
        camera = parse_capture_profile(BASES["CaptureProfile:video"])
        deployment = build_vision_deployment("m", "ns", parse_inference_model(spec), camera, settings)
    elif spec["type"] == "video":
        model = parse_inference_model(BASES["InferenceModel"])
        deployment = build_vision_deployment("m", "ns", model, parse_capture_profile(spec), settings)
    else:
        deployment = build_audio_deployment("p", "ns", parse_capture_profile(spec), settings)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


CASES = [(s, f, v) for s in SETTINGS for f in range(len(s.crds)) for v in edge_values(s)]


@pytest.mark.parametrize(
    ("setting", "field", "value"), CASES, ids=[f"{s.crd_fields[f][0]}:{s}={v}" for s, f, v in CASES]
)
def test_every_value_the_crd_admits_reaches_the_workload_unchanged(
    setting: Setting, field: int, value: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    kind, spec = spec_with(setting, value, field)
    if not admitted(kind, spec):
        pytest.skip(f"the CRD refuses {spec} (a rule across fields): nothing reaches a workload")
    env = pod_env(kind, spec)
    assert setting in env, f"the builder does not set {setting}"
    for name in list(env):
        monkeypatch.delenv(name, raising=False)
    workload: Any
    if setting.startswith("EVENTS_"):
        workload = EventsSettings(**env)
    elif setting.startswith("AUDIO_"):
        workload = AudioSettings(**env)
    elif setting.startswith("CAPTURE_"):
        workload = CaptureSettings(**env)
    else:
        workload = VisionSettings(**env)
    name = next(n for n, f in type(workload).model_fields.items() if f.validation_alias == setting)
    assert getattr(workload, name) == value


def test_every_crd_field_of_the_contract_has_edge_values_the_crd_admits() -> None:
    """The walk above is not a walk of skips: every variable reaches a workload with its default and at least one
    edge (silenceDbfs at 0 can never be below loudDbfs, whose maximum is 0 too)."""
    for setting, field in [(s, f) for s in SETTINGS for f in range(len(s.crds))]:
        passing = [v for v in edge_values(setting) if admitted(*spec_with(setting, v, field))]
        assert setting.crd_default is None or setting.crd_default in passing, (setting, passing)
        assert len(passing) >= min(2, len(edge_values(setting))), (setting, passing)


MQTT_VALUES = (
    [(EventsEnv.MQTT_URL, v, True) for v in BROKER_URLS_ADMITTED]
    + [(EventsEnv.MQTT_URL, v, False) for v in [*BROKER_URLS_REFUSED, "mqtt://bro ker", "mqtt://"]]
    + [(EventsEnv.TOPIC_PREFIX, v, True) for v in TOPIC_PREFIXES_ADMITTED]
    + [(EventsEnv.TOPIC_PREFIX, v, False) for v in [*TOPIC_PREFIXES_REFUSED, "", "/", "korall\n", "a\x7f"]]
)


@pytest.mark.parametrize(("setting", "value", "valid"), MQTT_VALUES, ids=[f"{s}={v!r}" for s, v, _ in MQTT_VALUES])
def test_a_broker_url_or_topic_prefix_is_valid_to_all_three_or_to_none(
    setting: Setting, value: str, valid: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CRD's pattern (as the API server matches it: the whole string), the operator's spec model and the
    workload's settings take the same values: one the CRD admitted and the workload refused would crash-loop the
    pods (a port of 99999, an empty topic level), one the workload took differently would go elsewhere (port 0 was
    1883). The real API server judges the CRD's side with these values in tests/realcluster/test_admission.py."""
    pattern = BROKER_URL_PATTERN if setting == EventsEnv.MQTT_URL else TOPIC_PREFIX_PATTERN
    assert setting.pattern == pattern
    assert bool(re.fullmatch(pattern, value)) is valid
    try:
        parse_inference_model(spec_with(setting, value)[1])
        assert valid, f"the operator took {value!r}"
    except SpecError as e:
        assert not valid and e.reason == "InvalidSpec", e
    for name in [EventsEnv.MQTT_URL, EventsEnv.TOPIC_PREFIX]:
        monkeypatch.delenv(name, raising=False)
    env = {EventsEnv.MQTT_URL: BROKER, setting: value}
    try:
        EventsSettings(**env)  # type: ignore[arg-type]
        assert valid, f"the workload took {value!r}"
    except ValidationError as e:
        assert not valid and str(setting) in str(e), e
    if valid and setting == EventsEnv.MQTT_URL:
        port = value.rstrip("/").rpartition(":")[2]
        assert EventsSettings(**env).broker.port == (int(port) if port.isdigit() else 1883)  # type: ignore[arg-type]


def test_the_crds_say_what_the_contract_says() -> None:
    """crds/*.yaml (and the chart's copies) carry the contract's types, ranges, choices and defaults:
    `python -m korall_tools.crds` writes them after a contract change."""
    for kind in crds.CRD_FILES:
        _, changes = crds.render(kind)
        assert changes == [], "run `python -m korall_tools.crds`:\n" + "\n".join(changes)
    assert crds.main(["--check"]) == 0


@pytest.mark.parametrize("setting", SETTINGS, ids=str)
def test_the_workload_default_is_the_crd_default_unless_the_contract_says_why(setting: Setting) -> None:
    """One default per field; the two deliberate exceptions are spelled out in the contract (crd_default)."""
    if setting.crd_default != setting.default:
        assert setting in (VisionEnv.ACCELERATOR, VisionEnv.EDGETPU_DEVICE), setting


def test_the_model_cache_bounds_the_chart_admits_are_the_downloaders() -> None:
    """modelDelivery.cacheMaxBytes and cacheKeepSeconds: the chart's schema, the operator's settings and the
    downloader hold to the contract's bounds, and an edge value set in the chart reaches the downloader unchanged
    (a value the chart admitted but the downloader refused would fail every model download on every node)."""
    import json
    from pathlib import Path

    from korall_contract import MODEL_CACHE_KEEP_S_RANGE, MODEL_CACHE_MAX_BYTES_LIMIT
    from korall_workloads.fetch.settings import FetchSettings
    from pydantic import ValidationError

    schema = json.loads((Path(__file__).parents[1] / "charts/korall/values.schema.json").read_text())
    delivery = schema["properties"]["modelDelivery"]["properties"]
    assert (delivery["cacheMaxBytes"]["minimum"], delivery["cacheMaxBytes"]["maximum"]) == (
        0,
        MODEL_CACHE_MAX_BYTES_LIMIT,
    )
    assert (
        delivery["cacheKeepSeconds"]["minimum"],
        delivery["cacheKeepSeconds"]["maximum"],
    ) == MODEL_CACHE_KEEP_S_RANGE
    model = parse_inference_model({"model": {"url": "https://models.example/m.tflite", "sha256": "ab" * 32}})
    for size, keep in [(0, MODEL_CACHE_KEEP_S_RANGE[0]), (MODEL_CACHE_MAX_BYTES_LIMIT, MODEL_CACHE_KEEP_S_RANGE[1])]:
        operator = OperatorSettings(model_cache_max_bytes=size, model_cache_keep_s=keep)
        pod = build_vision_deployment("m", "ns", model, None, operator)["spec"]["template"]["spec"]
        init = pod["initContainers"][0]  # the download (the sidecar after it reads no budget)
        env = {e["name"]: e["value"] for e in init["env"]}
        fetch = FetchSettings.model_validate(env)
        assert (fetch.cache_max_bytes, fetch.cache_keep_s) == (size, keep)
    for wrong in ({"model_cache_max_bytes": MODEL_CACHE_MAX_BYTES_LIMIT + 1}, {"model_cache_keep_s": 59}):
        with pytest.raises(ValidationError):
            OperatorSettings(**wrong)  # type: ignore[arg-type]
