"""One model, one interpreter, one thread that touches it: the detector every caller shares.

A LiteRT interpreter is not thread-safe, and the service has two callers: /infer requests on the event loop
and the camera loop on its own thread. Both go through `Detector`, which owns a single-thread executor: the
interpreter is created, warmed up and invoked only on that thread, so calls are serialized by construction and
no failed or timed-out call can leave it half-used (a queued call that times out is cancelled before it runs;
a running one finishes and its result is dropped). While one image is being invoked, the next request's
decoding runs on another core, which is where the service's throughput comes from.

There is no reload: a new model means a new process (the operator rolls the pod).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import enum
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .postprocess import Detection, decode_ssd
from .preprocess import PreparedImage, prepare_array
from .runtime import LoadedModel, ModelLoadError, open_model
from .settings import VisionSettings

log = logging.getLogger(__name__)


class ModelState(enum.StrEnum):
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


class DetectorNotReady(RuntimeError):
    """detect() was called before the model loaded and warmed up, or after it failed to."""


@dataclass(frozen=True)
class Timings:
    decode_ms: float
    preprocess_ms: float
    queue_ms: float  # waiting for the interpreter while other images ran
    invoke_ms: float
    postprocess_ms: float
    total_ms: float


@dataclass(frozen=True)
class DetectionResult:
    detections: list[Detection]
    width: int
    height: int
    timings: Timings


@dataclass(frozen=True)
class RawOutput:
    boxes: np.ndarray
    classes: np.ndarray
    scores: np.ndarray
    count: np.ndarray
    queue_ms: float
    invoke_ms: float


class Detector:
    """Thread-safe object detector around one LiteRT interpreter (see the module docstring)."""

    def __init__(self, settings: VisionSettings, on_invoke: Callable[[float], None] | None = None) -> None:
        self.settings = settings
        self.on_invoke = on_invoke  # called with each invoke's seconds (metrics)
        self.state = ModelState.LOADING
        self.error: str | None = None
        self.model: LoadedModel | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="litert-invoke")
        self._lock = threading.Lock()  # the executor already serializes; the lock makes it explicit and cheap
        self._load_future: concurrent.futures.Future[None] | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start_loading(self) -> concurrent.futures.Future[None]:
        """Load and warm up on the invoke thread; returns at once. Idempotent."""
        if self._load_future is None:
            self._load_future = self._executor.submit(self._load)
        return self._load_future

    def load(self) -> None:
        """Load and warm up, blocking; raises ModelLoadError if the model cannot run."""
        self.start_loading().result()
        if self.state is ModelState.FAILED:
            raise ModelLoadError(self.error or "model failed to load")

    def _load(self) -> None:
        try:
            model = open_model(self.settings)
            self.model = model
            warm = np.full(model.input_shape[1:], 128, dtype=np.uint8)
            out = self._invoke(warm)
            if out.boxes.shape[-1] != 4 or not np.isfinite(out.scores).all():
                raise ModelLoadError(f"warm-up inference of {model.entry.file} gave malformed outputs")
        except ModelLoadError as exc:
            self._fail(str(exc))
            return
        except Exception as exc:  # the service must report any load failure, not die with it
            log.exception("model load failed")
            self._fail(f"unexpected {type(exc).__name__} while loading the model: {exc}")
            return
        self.state = ModelState.READY
        log.info(
            "model ready: %s (%s) sha256=%s accelerator=%s input=%s threads=%s warm-up %.1f ms%s",
            model.entry.name,
            model.entry.path,
            model.sha256,
            model.accelerator,
            "x".join(str(v) for v in model.input_shape),
            model.num_threads,
            out.invoke_ms,
            f" (CPU because {model.fallback_reason})" if model.fallback_reason else "",
            extra={
                "model": model.entry.name,
                "sha256": model.sha256,
                "accelerator": model.accelerator,
                "input_shape": list(model.input_shape),
            },
        )

    def _fail(self, message: str) -> None:
        self.error = message
        self.state = ModelState.FAILED
        log.error("model failed to load: %s", message)

    def close(self) -> None:
        """Stop the invoke thread after the call in progress; queued calls are cancelled."""
        self._executor.shutdown(wait=True, cancel_futures=True)

    @property
    def ready(self) -> bool:
        return self.state is ModelState.READY

    def status(self) -> dict[str, Any]:
        """What /health reports about the model."""
        out: dict[str, Any] = {"state": self.state.value, "error": self.error}
        if self.model is not None:
            m = self.model
            out.update(
                name=m.entry.name,
                file=m.entry.file,
                sha256=m.sha256,
                accelerator=m.accelerator,
                fallback_reason=m.fallback_reason,
                input_shape=list(m.input_shape),
                num_threads=m.num_threads,
            )
        return out

    def _ready_model(self) -> LoadedModel:
        if self.state is not ModelState.READY or self.model is None:
            raise DetectorNotReady(
                f"model failed to load: {self.error}" if self.state is ModelState.FAILED else "model is still loading"
            )
        return self.model

    @property
    def input_size(self) -> tuple[int, int]:
        """(width, height) of the model input."""
        return self._ready_model().input_size

    # -- inference -------------------------------------------------------------------------------------------

    def _invoke(self, tensor: np.ndarray, submitted: float | None = None) -> RawOutput:
        """Runs on the invoke thread only."""
        model = self.model
        assert model is not None
        interp = model.interpreter
        start = time.perf_counter()
        with self._lock:
            interp.set_tensor(model.input_index, tensor[np.newaxis])
            interp.invoke()
            invoked = time.perf_counter()
            b, c, s, n = (interp.get_tensor(i) for i in model.output_indices)
        invoke_s = invoked - start
        if self.on_invoke is not None:
            self.on_invoke(invoke_s)
        return RawOutput(b, c, s, n, (start - submitted) * 1000.0 if submitted else 0.0, invoke_s * 1000.0)

    def _decode(
        self, raw: RawOutput, size: tuple[int, int], score_th: float | None, topk: int | None
    ) -> list[Detection]:
        model = self._ready_model()
        return decode_ssd(
            raw.boxes,
            raw.classes,
            raw.scores,
            raw.count,
            labels=model.labels,
            image_size=size,
            score_th=self.settings.score_th if score_th is None else score_th,
            topk=self.settings.topk if topk is None else topk,
        )

    def detect(self, rgb: np.ndarray, *, score_th: float | None = None, topk: int | None = None) -> DetectionResult:
        """Detect objects in an [H, W, 3] uint8 RGB frame (any size), blocking; for threads such as the camera loop.

        Raises DetectorNotReady, ValueError for a wrong array, TimeoutError past INFER_TIMEOUT_S.
        """
        t0 = time.perf_counter()
        model = self._ready_model()
        if threading.current_thread().name.startswith("litert-invoke"):
            raise RuntimeError("detect() called from the invoke thread would deadlock")
        tensor = prepare_array(rgb, model.input_size)
        t1 = time.perf_counter()
        future = self._executor.submit(self._invoke, tensor, time.perf_counter())
        try:
            raw = future.result(timeout=self.settings.infer_timeout_s)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"inference took longer than {self.settings.infer_timeout_s} s") from None
        t2 = time.perf_counter()
        detections = self._decode(raw, (rgb.shape[1], rgb.shape[0]), score_th, topk)
        t3 = time.perf_counter()
        timings = Timings(0.0, (t1 - t0) * 1000, raw.queue_ms, raw.invoke_ms, (t3 - t2) * 1000, (t3 - t0) * 1000)
        return DetectionResult(detections, rgb.shape[1], rgb.shape[0], timings)

    async def detect_prepared(
        self, image: PreparedImage, *, score_th: float | None = None, topk: int | None = None, started: float
    ) -> DetectionResult:
        """Detect on an image already decoded by `prepare_image`, without blocking the event loop.

        The caller bounds the time (asyncio.timeout): cancelling this coroutine cancels a call still queued
        for the interpreter, so timed-out requests never pile up work behind a slow one.
        """
        self._ready_model()
        loop = asyncio.get_running_loop()
        raw = await asyncio.wrap_future(
            self._executor.submit(self._invoke, image.tensor, time.perf_counter()), loop=loop
        )
        t2 = time.perf_counter()
        detections = self._decode(raw, (image.width, image.height), score_th, topk)
        t3 = time.perf_counter()
        timings = Timings(
            image.decode_ms, image.preprocess_ms, raw.queue_ms, raw.invoke_ms, (t3 - t2) * 1000, (t3 - started) * 1000
        )
        return DetectionResult(detections, image.width, image.height, timings)
