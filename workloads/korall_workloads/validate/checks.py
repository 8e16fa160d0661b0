"""One validation run: checksum, structure, then the golden set on the model (a CPU build) or on its CPU twin
(an Edge TPU build, which cannot run here: the Job asks for no TPU, every TPU belongs to a serving pod).

Each step either passes or ends the run with a Failed result naming its reason; what stops the run without judging
the model (an unreadable golden set, a missing file) is an Error. The golden set runs on the vision service's own
Detector, so the model is loaded, checked and decoded exactly as it will be when it serves.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

from korall_workloads.vision.catalog import (
    ModelFileError,
    entry_for,
    file_sha256,
    read_labels,
    read_manifest,
)
from korall_workloads.vision.detector import Detector
from korall_workloads.vision.golden import GoldenSet, GoldenSetError, load_golden_set, run_golden_set, summary
from korall_workloads.vision.runtime import ModelLoadError
from korall_workloads.vision.settings import DEFAULT_LABELS_FILE, VisionSettings

from .result import Result
from .settings import ValidateSettings
from .structure import ModelStructure, StructureError, check_structure, inspect_model, same_tensors

log = logging.getLogger("korall_workloads.validate")


class Stop(Exception):
    """Ends the run with this result."""

    def __init__(self, verdict: str, reason: str, message: str) -> None:
        super().__init__(message)
        self.verdict, self.reason, self.message = verdict, reason, message


def validate(settings: ValidateSettings) -> Result:
    """Judge the model; never raises (a bug becomes an Error result)."""
    started = time.monotonic()
    result = Result(settings.model_sha256.lower(), "Passed", "Validated", "")
    try:
        with tempfile.TemporaryDirectory(prefix="golden-") as workdir:
            _run(settings, result, Path(workdir))
    except Stop as stop:
        result.verdict, result.reason, result.message = stop.verdict, stop.reason, stop.message  # type: ignore[assignment]
    except Exception as exc:  # a bug: still one result, and the traceback in the log
        log.exception("validation failed unexpectedly")
        result.verdict, result.reason, result.message = "Error", "Unexpected", f"{type(exc).__name__}: {exc}"
    result.duration_s = time.monotonic() - started
    return result


def _run(settings: ValidateSettings, result: Result, workdir: Path) -> None:
    path = settings.model_path
    _checksum(path, settings.model_sha256, "model", result)
    labels_path = _labels_path(settings)
    try:
        labels = read_labels(labels_path)
    except ModelFileError as exc:
        raise Stop("Error", "LabelsUnreadable", str(exc)) from exc
    structure = _structure(path, settings.accelerator, labels)
    result.checks["structure"] = structure.describe()
    try:
        golden = load_golden_set(settings.golden_set, workdir)
    except GoldenSetError as exc:
        raise Stop("Error", "GoldenSetUnusable", str(exc)) from exc
    runner = path
    if structure.edgetpu:
        twin = _twin(settings, structure, labels, result)
        if twin is None:
            result.checks["run"] = "skipped: an Edge TPU build runs on the TPU only, and no CPU twin was named"
            result.message = f"{structure.describe()}; structure checked, no CPU twin to run the golden set on"
            return
        runner = twin
    _golden(settings, runner, labels_path, golden, result)


def _checksum(path: Path, expected: str, what: str, result: Result) -> None:
    if not path.is_file():
        raise Stop("Error", "ModelMissing", f"{what} file {path} does not exist")
    actual = file_sha256(path)
    if actual != expected.lower():
        raise Stop("Failed", "ChecksumMismatch", f"{what} file {path} has sha256 {actual}, expected {expected.lower()}")
    result.checks["checksum" if what == "model" else "twinChecksum"] = "ok"


def _labels_path(settings: ValidateSettings) -> Path:
    if settings.labels_path is not None:
        return settings.labels_path
    entry = entry_for(settings.model_path, read_manifest(settings.models_dir))
    return settings.models_dir / (entry.labels or DEFAULT_LABELS_FILE)


def _structure(path: Path, accelerator: str, labels: dict[int, str]) -> ModelStructure:
    try:
        structure = inspect_model(path)
        check_structure(structure, path, accelerator, labels)
    except StructureError as exc:
        raise Stop("Failed", exc.reason, exc.message) from exc
    return structure


def _twin(settings: ValidateSettings, build: ModelStructure, labels: dict[int, str], result: Result) -> Path | None:
    """The CPU twin of an Edge TPU build: the one the spec names, else the bundled one the manifest names."""
    twin = settings.twin_model_path
    if twin is not None:
        if settings.twin_model_sha256 is None:
            raise Stop("Error", "InvalidConfiguration", "VALIDATE_TWIN_MODEL_PATH needs VALIDATE_TWIN_MODEL_SHA256")
        _checksum(twin, settings.twin_model_sha256, "CPU twin", result)
    else:
        manifest = read_manifest(settings.models_dir)
        entry = entry_for(settings.model_path, manifest) if settings.model_path.name in manifest else None
        bundled = settings.models_dir / entry.cpu_variant if entry and entry.cpu_variant else None
        if bundled is None or not bundled.is_file():
            return None
        twin = bundled
    try:
        twin_structure = inspect_model(twin)
        check_structure(twin_structure, twin, "cpu", labels)
    except StructureError as exc:
        raise Stop("Failed", f"Twin{exc.reason}", f"CPU twin: {exc.message}") from exc
    if not same_tensors(build, twin_structure):
        raise Stop(
            "Failed",
            "TwinMismatch",
            f"the CPU twin ({twin_structure.describe()}) does not match the Edge TPU build ({build.describe()})",
        )
    return twin


def _golden(settings: ValidateSettings, model: Path, labels: Path, golden: GoldenSet, result: Result) -> None:
    vision = VisionSettings(
        models_dir=model.parent,
        model_path=str(model),
        model_sha256=file_sha256(model),  # verified above against what the spec says
        labels_path=str(labels),
        accelerator="cpu",
        num_threads=settings.num_threads,
        infer_timeout_s=60,
    )
    detector = Detector(vision)
    try:
        try:
            detector.load()
        except ModelLoadError as exc:
            raise Stop("Failed", "ModelUnloadable", str(exc)) from exc
        assert detector.model is not None
        loaded = detector.model
        outcomes = run_golden_set(golden, lambda rgb: detector.raw_detections(loaded, rgb))
    finally:
        detector.close()
    result.images = outcomes
    result.checks["run"] = "cpu" if model == settings.model_path else f"CPU twin {model.name}"
    result.message = summary(outcomes)
    if not all(o.passed for o in outcomes):
        raise Stop("Failed", "GoldenSetMismatch", result.message)
