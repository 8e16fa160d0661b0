"""Model selection: Edge TPU fallback and refusal, checksums, variants, broken files.

There is no Edge TPU and no libedgetpu on this machine, so the delegate path can only be tested for what
happens without it: the fallback under ACCELERATOR=auto and the refusal under ACCELERATOR=edgetpu (both real,
nothing mocked). The path where the delegate loads needs the hardware.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
from korall_workloads.vision.catalog import list_models, read_labels
from korall_workloads.vision.detector import Detector, DetectorNotReady, ModelState
from korall_workloads.vision.runtime import ModelLoadError, open_model
from vision_helpers import MODELS, photo_rgb, settings

CPU = "mobilenet_ssd_v2_coco_quant_postprocess.tflite"
TPU = "mobilenet_ssd_v2_coco_quant_postprocess_edgetpu.tflite"


def test_auto_falls_back_to_the_cpu_model_and_says_why(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        model = open_model(settings(accelerator="auto"))
    assert model.accelerator == "cpu" and model.entry.file == CPU
    assert model.fallback_reason is not None and "libedgetpu.so.1" in model.fallback_reason
    assert any("running on the CPU" in r.getMessage() and "libedgetpu" in r.getMessage() for r in caplog.records)


def test_auto_with_the_edgetpu_model_runs_its_cpu_build() -> None:
    model = open_model(settings(accelerator="auto", model_path=TPU))
    assert (model.accelerator, model.entry.file) == ("cpu", CPU)
    assert model.sha256 == "7046f31a72ec0045a57b94199144c96cf5840c7dc106b808b64a1ed5559aa0cd"


def test_edgetpu_refuses_to_start_without_a_tpu() -> None:
    with pytest.raises(ModelLoadError) as err:
        open_model(settings(accelerator="edgetpu", edgetpu_device="pci"))
    msg = str(err.value)
    assert "ACCELERATOR=edgetpu" in msg and "libedgetpu.so.1" in msg and "ACCELERATOR=auto" in msg
    assert "\n" not in msg


def test_detector_reports_a_failed_load_and_refuses_to_detect() -> None:
    det = Detector(settings(accelerator="edgetpu"))
    try:
        with pytest.raises(ModelLoadError):
            det.load()
        assert det.state is ModelState.FAILED and det.status()["error"].startswith("ACCELERATOR=edgetpu")
        with pytest.raises(DetectorNotReady, match="failed to load"):
            det.detect(photo_rgb("chelsea"))
    finally:
        det.close()


def test_sha256_mismatch_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="MODEL_SHA256 expects 0000"):
        open_model(settings(model_sha256="0" * 64))
    # a file that differs from its manifest entry (e.g. replaced on the volume) is refused too
    shutil.copy(MODELS / "manifest.json", tmp_path / "manifest.json")
    shutil.copy(MODELS / "coco_labels.txt", tmp_path / "coco_labels.txt")
    data = bytearray((MODELS / CPU).read_bytes())
    data[-1] ^= 0xFF
    (tmp_path / CPU).write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match=r"manifest.json expects 7046f31a"):
        open_model(settings(models_dir=tmp_path, accelerator="cpu"))


def test_cpu_accelerator_with_only_an_edgetpu_build(tmp_path: Path) -> None:
    shutil.copy(MODELS / TPU, tmp_path / TPU)
    shutil.copy(MODELS / "coco_labels.txt", tmp_path / "coco_labels.txt")
    with pytest.raises(ModelLoadError, match="no CPU build"):
        open_model(settings(models_dir=tmp_path, model_path=TPU, accelerator="cpu"))


def test_missing_and_broken_model_files(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        open_model(settings(model_path="nope.tflite"))
    (tmp_path / "junk.tflite").write_bytes(b"this is not a flatbuffer" * 10)
    shutil.copy(MODELS / "coco_labels.txt", tmp_path / "coco_labels.txt")
    with pytest.raises(ModelLoadError, match="LiteRT cannot load"):
        open_model(settings(models_dir=tmp_path, model_path="junk.tflite", accelerator="cpu"))
    with pytest.raises(ModelLoadError, match="labels file"):
        open_model(settings(labels_path=str(tmp_path / "missing.txt")))


def test_labels_keep_the_id_column() -> None:
    labels = read_labels(MODELS / "coco_labels.txt")
    assert labels[0] == "person" and labels[16] == "cat" and labels[46] == "cup"
    assert 11 not in labels  # COCO ids have gaps


def test_list_models_without_a_manifest(tmp_path: Path) -> None:
    shutil.copy(MODELS / TPU, tmp_path / "custom_edgetpu.tflite")
    (tmp_path / "notes.txt").write_text("ignored")
    (listed,) = list_models(tmp_path, active=None)
    assert listed["edgetpu"] is True and listed["sha256_verified"] is None and listed["active"] is False
