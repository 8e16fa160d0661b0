"""One model, shared by every caller: load it, report on it, and detect objects in uploads and camera frames.

Two kinds of callers share it: /infer requests and the camera loop on its own thread. An uploaded image is decoded
and resized on one of a few worker threads (`workers.Workers`), so that the event loop never does heavy work and
/health stays instant during any inference; a camera frame is resized on the camera's thread. Either way the
tensor then goes through `inference.InterpreterQueue`, which runs the jobs of every caller on the one interpreter
back to back and skips those whose deadline passed (see there). One request alone costs two thread hand-offs
(event loop -> worker -> event loop).

There is no reload: a new model means a new process (the operator rolls the pod).

With SELF_TEST_GOLDEN_SET the load ends with a self-test: the golden set (golden.py) runs once, after the warm-up
and before the state turns ready, so /ready answers 200 only for a model that finds what it must. It costs one
inference per golden image, once per process (a few hundred milliseconds on a CPU); a failed case fails the load,
saying which image and why, and the pod stays unready (the operator rolls back a model whose pods never get ready).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import enum
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from korall_workloads.common.errors import DeadlineExceeded, Unavailable

from .decode_cost import give_back_memory
from .golden import GoldenSetError, load_golden_set, run_golden_set, summary
from .inference import Interpreter, InterpreterQueue, Outcome, RawOutput, settle
from .postprocess import Detection, decode_ssd
from .preprocess import OpenedImage, PreparedImage, decode_image, open_image, prepare_array
from .runtime import LoadedModel, ModelLoadError, open_model
from .settings import VisionSettings
from .workers import Workers, awaitable

log = logging.getLogger(__name__)


class ModelState(enum.StrEnum):
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


LOADING_RETRY_AFTER_S = 1
"""Retry-After of a 503 while the model loads: a load and its warm-up take a second or two."""


class DetectorNotReady(Unavailable):
    """detect() was called before the model loaded and warmed up, or after it failed to."""


class InferenceTimeout(DeadlineExceeded):
    """An inference (with its wait for the interpreter) went past INFER_TIMEOUT_S; the service carries on."""


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


class Detector:
    """Thread-safe object detector around one LiteRT interpreter (see the module docstring)."""

    def __init__(self, settings: VisionSettings, on_invoke: Callable[[float], None] | None = None) -> None:
        self.settings = settings
        self.on_invoke = on_invoke  # called with each invoke's seconds (metrics)
        self.state = ModelState.LOADING
        self.error: str | None = None
        self.model: LoadedModel | None = None
        self.self_test: str | None = None  # the golden set's outcome, with SELF_TEST_GOLDEN_SET
        self._queue: InterpreterQueue | None = None
        self._loader = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-load")
        # One worker per interpreter, and one more to decode the next image while every interpreter invokes, so
        # that an interpreter finds a tensor waiting when it frees up instead of waiting for a decode.
        self._workers = Workers(max(2, settings.resolved_interpreters("cpu") + 1), "infer")
        self._large_decodes = Workers(1, "large-decode")  # one at a time: DECODE_SERIAL_BYTES
        self._load_future: concurrent.futures.Future[None] | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start_loading(self) -> concurrent.futures.Future[None]:
        """Load and warm up on a background thread; returns at once. Idempotent."""
        if self._load_future is None:
            self._load_future = self._loader.submit(self._load)
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
            interpreters = [Interpreter(i, model.input_index, model.output_indices) for i in model.interpreters]
            warm = np.full(model.input_shape[1:], 128, dtype=np.uint8)
            for interpreter in interpreters:  # each one's first invoke is slow (XNNPACK packs the weights)
                out = InterpreterQueue([interpreter], self._workers.submit).run(warm, time.monotonic() + 600)
                if out.boxes.shape[-1] != 4 or not np.isfinite(out.scores).all():
                    raise ModelLoadError(f"warm-up inference of {model.entry.file} gave malformed outputs")
            self._queue = InterpreterQueue(interpreters, self._workers.submit, self._invoked)
            if self.settings.self_test_golden_set is not None:
                self.self_test = self._run_self_test(model, self.settings.self_test_golden_set)
        except ModelLoadError as exc:
            self._fail(str(exc))
            return
        except Exception as exc:  # the service must report any load failure, not die with it
            log.exception("model load failed")
            self._fail(f"unexpected {type(exc).__name__} while loading the model: {exc}")
            return
        self.state = ModelState.READY
        log.info(
            "model ready: %s (%s) sha256=%s accelerator=%s input=%s interpreters=%d threads=%s warm-up %.1f ms%s",
            model.entry.name,
            model.entry.path,
            model.sha256,
            model.accelerator,
            "x".join(str(v) for v in model.input_shape),
            len(model.interpreters),
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

    def _run_self_test(self, model: LoadedModel, path: Path) -> str:
        """The golden set, once; raises ModelLoadError naming the first failures."""
        with tempfile.TemporaryDirectory(prefix="golden-") as workdir:
            try:
                golden = load_golden_set(path, workdir=Path(workdir))
            except GoldenSetError as exc:
                raise ModelLoadError(f"self-test: {exc}") from exc
        outcomes = run_golden_set(golden, lambda rgb: self.raw_detections(model, rgb))
        result = summary(outcomes)
        if not all(o.passed for o in outcomes):
            raise ModelLoadError(f"self-test on golden set {golden.source} failed: {result}")
        log.info("self-test: %s", result)
        return result

    def raw_detections(self, model: LoadedModel, rgb: np.ndarray, score_th: float = 0.05) -> list[tuple[str, float]]:
        """(label, score) of every detection at `score_th` or more in an RGB frame, blocking; for golden sets, which
        run on a model that is not ready yet (the self-test) or never will serve (the validator)."""
        tensor = prepare_array(rgb, model.input_size)
        raw = self._invoke(tensor, time.monotonic() + self.settings.infer_timeout_s)
        found = decode_ssd(
            raw.boxes, raw.classes, raw.scores, raw.count,
            labels=model.labels, image_size=(rgb.shape[1], rgb.shape[0]), score_th=score_th, topk=100,
        )  # fmt: skip
        return [(d.label, d.score) for d in found]

    def _fail(self, message: str) -> None:
        self.error = message
        self.state = ModelState.FAILED
        log.error("model failed to load: %s", message)

    def close(self) -> None:
        """Stop the worker threads after the calls in progress; queued calls are cancelled."""
        self._workers.shutdown()
        self._large_decodes.shutdown()
        self._loader.shutdown(wait=True, cancel_futures=True)

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
                num_interpreters=len(m.interpreters),
                num_threads=m.num_threads,
            )
        if self.settings.self_test_golden_set is not None:
            out["self_test"] = self.self_test
        return out

    def require_ready(self) -> LoadedModel:
        """The loaded model; raises DetectorNotReady (saying why) while it loads or after it failed to."""
        if self.state is ModelState.FAILED:  # no Retry-After: only a new pod (a fixed spec) mends it
            raise DetectorNotReady(f"model failed to load: {self.error}")
        if self.state is not ModelState.READY or self.model is None:
            raise DetectorNotReady("model is loading; retry shortly", retry_after_s=LOADING_RETRY_AFTER_S)
        return self.model

    # -- inference -------------------------------------------------------------------------------------------

    def _invoked(self, seconds: float) -> None:
        if self.on_invoke is not None:
            self.on_invoke(seconds)

    def _invoke(self, tensor: np.ndarray, deadline: float) -> RawOutput:
        """Blocking: run one input tensor on the interpreter; InferenceTimeout past `deadline`."""
        assert self._queue is not None
        try:
            return self._queue.run(tensor, deadline)
        except TimeoutError:
            raise InferenceTimeout(
                f"inference took longer than {self.settings.infer_timeout_s:g} s (INFER_TIMEOUT_S)"
            ) from None

    def _detections(
        self, raw: RawOutput, size: tuple[int, int], score_th: float | None, topk: int | None
    ) -> list[Detection]:
        model = self.require_ready()
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

        Raises DetectorNotReady, ValueError for a wrong array, InferenceTimeout past INFER_TIMEOUT_S.
        """
        t0 = time.perf_counter()
        deadline = time.monotonic() + self.settings.infer_timeout_s
        model = self.require_ready()
        tensor = prepare_array(rgb, model.input_size)
        t1 = time.perf_counter()
        raw = self._invoke(tensor, deadline)
        t2 = time.perf_counter()
        detections = self._detections(raw, (rgb.shape[1], rgb.shape[0]), score_th, topk)
        t3 = time.perf_counter()
        timings = Timings(0.0, (t1 - t0) * 1000, raw.queue_ms, raw.invoke_ms, (t3 - t2) * 1000, (t3 - t0) * 1000)
        return DetectionResult(detections, rgb.shape[1], rgb.shape[0], timings)

    def _decode_and_queue(self, data: bytes, max_pixels: int, budget: int, deadline: float, outcome: Outcome) -> None:
        """On a worker: read the header, decode, queue, and run the queue if an interpreter is free. A decode that
        will take more than DECODE_SERIAL_BYTES goes to the one large-decode thread instead, so that large decodes
        run one at a time and never hold up the workers. Errors go to `outcome`."""
        if outcome.cancelled():
            return  # the request timed out while this waited for a worker
        try:
            input_size = self.require_ready().input_size
            opened = open_image(data, input_size, max_pixels, budget)
        except Exception as exc:
            settle(outcome, error=exc)
            return
        if opened.cost_bytes > self.settings.decode_serial_bytes:
            self._large_decodes.submit(self._decode_opened, opened, input_size, deadline, outcome, True)
        else:
            self._decode_opened(opened, input_size, deadline, outcome, False)

    def _decode_opened(
        self, opened: OpenedImage, input_size: tuple[int, int], deadline: float, outcome: Outcome, large: bool
    ) -> None:
        if outcome.cancelled():
            return  # timed out while waiting for the large-decode thread
        assert self._queue is not None
        try:
            image = decode_image(opened, input_size)
        except Exception as exc:
            settle(outcome, error=exc)
            return
        finally:
            if large:
                give_back_memory()
        self._queue.submit(image.tensor, deadline, image, outcome)
        self._queue.run_pending()

    async def detect_encoded(
        self,
        data: bytes,
        *,
        max_pixels: int,
        decode_budget: int | None = None,
        score_th: float | None = None,
        topk: int | None = None,
        started: float | None = None,
        timeout_s: float | None = None,
    ) -> tuple[DetectionResult, PreparedImage]:
        """Decode an uploaded image and detect objects in it on a worker thread, without blocking the event loop.

        Raises ImageError for bad data (ImageTooLarge past `max_pixels` or `decode_budget` bytes, default
        DECODE_BUDGET_BYTES), DetectorNotReady, and InferenceTimeout past INFER_TIMEOUT_S: a timed-out request still
        waiting for a worker or for the interpreter is skipped, one already invoking finishes and its result is
        dropped. `started` (perf_counter) is where timings.total begins; `timeout_s` defaults to INFER_TIMEOUT_S.
        """
        self.require_ready()
        budget = self.settings.decode_budget_bytes if decode_budget is None else decode_budget
        timeout = self.settings.infer_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout
        t0 = time.perf_counter() if started is None else started
        outcome: Outcome = concurrent.futures.Future()
        waiter = awaitable(outcome)
        try:
            async with asyncio.timeout(timeout):
                # Submitted last, just before this thread goes idle: the woken worker finds the GIL free.
                self._workers.submit(self._decode_and_queue, data, max_pixels, budget, deadline, outcome)
                image, raw = await waiter
        except BaseException as exc:
            outcome.cancel()  # a job still waiting for a worker or for the interpreter is then skipped
            if isinstance(exc, TimeoutError):  # past the deadline here, or while queued for the interpreter
                raise InferenceTimeout(
                    f"inference took longer than {timeout:g} s (INFER_TIMEOUT_S); try again or send a smaller image"
                ) from None
            raise
        t2 = time.perf_counter()
        detections = self._detections(raw, (image.width, image.height), score_th, topk)
        t3 = time.perf_counter()
        timings = Timings(
            image.decode_ms, image.preprocess_ms, raw.queue_ms, raw.invoke_ms, (t3 - t2) * 1000, (t3 - t0) * 1000
        )
        return DetectionResult(detections, image.width, image.height, timings), image
