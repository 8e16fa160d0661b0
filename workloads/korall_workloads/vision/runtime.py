"""Model loading and accelerator selection: the only module that talks to LiteRT and libedgetpu.

`open_model(settings)` decides which file runs where, Frigate-style: the Edge TPU build through
`load_delegate("libedgetpu.so.1", {"device": ...})`, or the CPU build with XNNPACK threads. Under
ACCELERATOR=auto a missing delegate or TPU falls back to the CPU build and says why; under ACCELERATOR=edgetpu
it is an error. The checksum is verified before the interpreter ever sees the file.

On the CPU it builds one interpreter per core by default (NUM_INTERPRETERS), each with its share of the cores as
threads: a single-threaded invoke scales far better over cores than XNNPACK's threads within one invoke of this
small model, and requests run side by side. On an Edge TPU one: the pod holds one TPU.
"""

from __future__ import annotations

import ctypes
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .catalog import (
    ModelEntry,
    ModelFileError,
    entry_for,
    gone_from_cache,
    hold_if_cached,
    read_labels,
    read_manifest,
    verify_sha256,
)
from .settings import DEFAULT_LABELS_FILE, VisionSettings

log = logging.getLogger(__name__)

EDGETPU_LIBRARY = "libedgetpu.so.1"

Accelerator = Literal["cpu", "edgetpu"]


class ModelLoadError(Exception):
    """The configured model cannot run; the message is the one line an operator needs to fix it."""


class EdgeTpuUnavailable(Exception):
    """libedgetpu or the TPU itself is missing; the message says which."""


@dataclass
class LoadedModel:
    """The allocated interpreters of one model file and everything the service reports about it."""

    interpreters: tuple[Any, ...]
    entry: ModelEntry
    sha256: str
    accelerator: Accelerator
    fallback_reason: str | None
    labels: dict[int, str]
    labels_path: Path
    input_index: int
    input_shape: tuple[int, int, int, int]  # 1, height, width, 3
    output_indices: tuple[int, int, int, int]  # boxes, classes, scores, count
    num_threads: int | None

    @property
    def interpreter(self) -> Any:
        """The first interpreter (tools and benches that want one)."""
        return self.interpreters[0]

    @property
    def input_size(self) -> tuple[int, int]:
        """(width, height) the model takes."""
        return self.input_shape[2], self.input_shape[1]


def load_edgetpu_delegate(device: str) -> Any:
    """Load the Edge TPU delegate for `device` (usb, usb:N, pci:N) or raise EdgeTpuUnavailable with the reason."""
    try:
        # Probe the library first: a failed load_delegate() on a missing library also prints a spurious
        # "Exception ignored in Delegate.__del__" traceback.
        ctypes.CDLL(EDGETPU_LIBRARY)
    except OSError as exc:
        raise EdgeTpuUnavailable(f"{EDGETPU_LIBRARY} is not installed ({exc}); install libedgetpu1-std") from exc
    from ai_edge_litert.interpreter import load_delegate

    try:
        return load_delegate(EDGETPU_LIBRARY, {"device": device})
    except (ValueError, RuntimeError, OSError) as exc:
        raise EdgeTpuUnavailable(f"no Edge TPU found at device {device!r} ({exc})") from exc


def _interpreter(path: Path, delegate: Any | None, num_threads: int) -> Any:
    from ai_edge_litert.interpreter import Interpreter

    try:
        if delegate is not None:
            interp = Interpreter(model_path=str(path), experimental_delegates=[delegate])
        else:
            interp = Interpreter(model_path=str(path), num_threads=num_threads)
        interp.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"LiteRT cannot load {path}: {first}") from exc
    return interp


def _ssd_tensors(interp: Any, path: Path) -> tuple[int, tuple[int, int, int, int], tuple[int, int, int, int]]:
    """Check the model is an SSD with one uint8 NHWC RGB input and the four postprocess outputs."""
    inputs = interp.get_input_details()
    outputs = interp.get_output_details()
    if len(inputs) != 1 or len(outputs) != 4:
        raise ModelLoadError(
            f"{path} is not an SSD detection model: expected 1 input and 4 outputs "
            f"(boxes, classes, scores, count), found {len(inputs)} and {len(outputs)}"
        )
    shape = tuple(int(v) for v in inputs[0]["shape"])
    if len(shape) != 4 or shape[0] != 1 or shape[3] != 3 or inputs[0]["dtype"].__name__ != "uint8":
        raise ModelLoadError(f"{path} input is {shape} {inputs[0]['dtype'].__name__}, expected [1, H, W, 3] uint8")
    # TFLite_Detection_PostProcess emits boxes [1,N,4], classes [1,N], scores [1,N], count [1], in this order.
    ranks = [len(o["shape"]) for o in outputs]
    if ranks != [3, 2, 2, 1]:
        raise ModelLoadError(f"{path} outputs have ranks {ranks}, expected TFLite_Detection_PostProcess [3, 2, 2, 1]")
    boxes, classes, scores, count = (int(o["index"]) for o in outputs)
    return int(inputs[0]["index"]), (shape[0], shape[1], shape[2], shape[3]), (boxes, classes, scores, count)


def _variant(entry: ModelEntry, file: str | None) -> Path | None:
    if not file:
        return None
    path = entry.path.parent / file
    return path if path.is_file() else None


def plan(settings: VisionSettings) -> tuple[Path | None, Path | None, ModelEntry]:
    """(edgetpu_file, cpu_file, requested entry) for the configured model; either file may be None."""
    requested = settings.resolved_model_path
    if not requested.is_file():
        raise ModelLoadError(
            f"MODEL_PATH {requested} does not exist (MODELS_DIR is {settings.models_dir}){gone_from_cache(requested)}"
        )
    entry = entry_for(requested)
    if entry.edgetpu:
        return requested, _variant(entry, entry.cpu_variant), entry
    return _variant(entry, entry.edgetpu_variant), requested, entry


def require_edgetpu(settings: VisionSettings) -> None:
    """Under ACCELERATOR=edgetpu, refuse to start without an Edge TPU build and a TPU that answers.

    Run before serving, so that the pod fails visibly (CrashLoopBackOff, the operator's Degraded condition)
    instead of idling unready. The probe delegate is released again; `open_model` loads its own.
    """
    edgetpu_file, _, requested = plan(settings)
    if edgetpu_file is None:
        raise ModelLoadError(
            f"ACCELERATOR=edgetpu but there is no Edge TPU build of {requested.file} in {requested.path.parent}"
        )
    try:
        load_edgetpu_delegate(settings.edgetpu_device_option)
    except EdgeTpuUnavailable as exc:
        raise ModelLoadError(
            f"ACCELERATOR=edgetpu but Edge TPU delegate unavailable: {exc}; use ACCELERATOR=auto or cpu to run on "
            "the CPU"
        ) from None


def open_model(settings: VisionSettings) -> LoadedModel:
    """Pick the accelerator and model file, verify it, build and allocate its interpreter."""
    edgetpu_file, cpu_file, requested = plan(settings)
    device = settings.edgetpu_device_option
    delegate = None
    reason: str | None = None
    chosen: Path | None = None

    if settings.accelerator in ("auto", "edgetpu"):
        if edgetpu_file is None:
            reason = f"no Edge TPU build of {requested.file} in {requested.path.parent}"
        else:
            try:
                delegate = load_edgetpu_delegate(device)
                chosen = edgetpu_file
            except EdgeTpuUnavailable as exc:
                reason = f"Edge TPU delegate unavailable: {exc}"
        if delegate is None and settings.accelerator == "edgetpu":
            raise ModelLoadError(f"ACCELERATOR=edgetpu but {reason}; use ACCELERATOR=auto or cpu to run on the CPU")
    else:
        reason = "ACCELERATOR=cpu"

    if chosen is None:
        if cpu_file is None:
            raise ModelLoadError(
                f"{requested.file} is an Edge TPU model and no CPU build of it is in {requested.path.parent} "
                f"({reason}); set MODEL_PATH to a CPU model"
            )
        chosen = cpu_file
        if settings.accelerator == "auto":
            log.warning("running on the CPU: %s", reason)

    manifest = read_manifest(chosen.parent)
    entry = entry_for(chosen, manifest)
    expected: str | None = entry.sha256
    source = str(chosen.parent / "manifest.json")
    if chosen == requested.path and settings.model_sha256:
        expected, source = settings.model_sha256, "MODEL_SHA256"
    try:
        hold_if_cached(chosen)  # before it is read: the node cache's collection leaves it alone from now on
        sha = verify_sha256(chosen, expected, source)
        labels_path = (
            Path(settings.labels_path)
            if settings.labels_path
            else chosen.parent / (entry.labels or DEFAULT_LABELS_FILE)
        )
        labels = read_labels(labels_path)
    except ModelFileError as exc:
        raise ModelLoadError(str(exc)) from exc

    accelerator: Accelerator = "edgetpu" if delegate is not None else "cpu"
    threads = settings.resolved_num_threads
    interpreters = [_interpreter(chosen, delegate, threads) for _ in range(settings.resolved_interpreters(accelerator))]
    input_index, input_shape, outputs = _ssd_tensors(interpreters[0], chosen)
    return LoadedModel(
        interpreters=tuple(interpreters),
        entry=entry,
        sha256=sha,
        accelerator=accelerator,
        fallback_reason=None if accelerator == "edgetpu" else reason,
        labels=labels,
        labels_path=labels_path,
        input_index=input_index,
        input_shape=input_shape,
        output_indices=outputs,
        num_threads=None if delegate is not None else threads,
    )
