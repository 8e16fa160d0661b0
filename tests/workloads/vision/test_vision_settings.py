"""Configuration: the contract's names, defaults, and a bad value stopping the service with one clear line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from korall_contract import VisionEnv, env_names
from korall_workloads.vision.settings import VisionSettings, auto_num_threads
from vision_helpers import MODELS, ROOT


def test_every_vision_env_name_is_a_setting() -> None:
    """All VisionEnv names except the camera's CAPTURE_* are read by VisionSettings, and nothing else is."""
    names = {n for n in env_names(VisionEnv) if not n.startswith("CAPTURE_")}
    aliases = {f.validation_alias for f in VisionSettings.model_fields.values()}
    assert aliases == names


def test_environment_is_read_and_defaults_point_at_the_bundled_model(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in sorted(env_names(VisionEnv)):
        monkeypatch.delenv(name, raising=False)
    s = VisionSettings()
    assert s.models_dir == MODELS
    assert s.resolved_model_path == MODELS / "mobilenet_ssd_v2_coco_quant_postprocess.tflite"
    assert (s.accelerator, s.edgetpu_device_option, s.port, s.host) == ("auto", "usb", 5052, "127.0.0.1")
    assert s.resolved_num_threads == auto_num_threads() >= 1
    monkeypatch.setenv(VisionEnv.SCORE_TH, "0.25")
    monkeypatch.setenv(VisionEnv.TOPK, "7")
    monkeypatch.setenv(VisionEnv.EDGETPU_DEVICE, "pci")
    monkeypatch.setenv(VisionEnv.LOG_LEVEL, "debug")
    monkeypatch.setenv(VisionEnv.MODEL_PATH, "/somewhere/else.tflite")
    s = VisionSettings()
    assert (s.score_th, s.topk, s.edgetpu_device_option, s.log_level) == (0.25, 7, "pci:0", "DEBUG")
    assert s.resolved_model_path == Path("/somewhere/else.tflite")


def _run_main(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in env_names(VisionEnv)}
    base["PYTHONPATH"] = os.pathsep.join(str(ROOT / d) for d in ("contract", "operator", "workloads"))
    return subprocess.run(
        [sys.executable, "-m", "korall_workloads.vision"],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({VisionEnv.SCORE_TH: "high"}, ["SCORE_TH='high'"]),
        ({VisionEnv.TOPK: "0"}, ["TOPK='0'"]),
        ({VisionEnv.ACCELERATOR: "gpu"}, ["ACCELERATOR='gpu'"]),
        ({VisionEnv.EDGETPU_DEVICE: "firewire", VisionEnv.PORT: "99999"}, ["EDGETPU_DEVICE", "PORT='99999'"]),
        ({VisionEnv.MODEL_SHA256: "abc"}, ["MODEL_SHA256='abc'"]),
        ({VisionEnv.INFER_TIMEOUT_S: "-1"}, ["INFER_TIMEOUT_S"]),
    ],
)
def test_invalid_value_stops_the_service_with_one_line(env: dict[str, str], names: list[str]) -> None:
    proc = _run_main(env)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("korall vision: invalid configuration:")
    assert "Traceback" not in proc.stderr
    for name in names:
        assert name in lines[0]
