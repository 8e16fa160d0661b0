"""One model, one interpreter, one lock: the detector every caller shares.

A LiteRT interpreter is not thread-safe, and the service has two kinds of callers: /infer requests and the
camera loop on its own thread. Both go through `Detector`: an image is decoded and resized by its caller's
thread (an /infer worker, or the camera thread), then queued as a job; whichever thread takes the interpreter
lock runs the queued jobs one after another (set input, invoke, read outputs, all under the lock), handing each
result straight to the caller waiting for it. So:

- one request alone costs two thread hand-offs (event loop -> worker -> event loop): its own worker runs it;
- under load one thread invokes back to back without sleeping between jobs, while the other core decodes the
  next images: throughput is that of the bare interpreter;
- nothing can leave the interpreter half-used, and a job whose deadline passed or whose caller gave up is
  skipped, never run (a running invoke finishes and its result is dropped).

There is no reload: a new model means a new process (the operator rolls the pod).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import enum
import functools
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from korall_workloads.common.errors import DeadlineExceeded, Unavailable

from .postprocess import Detection, decode_ssd
from .preprocess import PreparedImage, prepare_array, prepare_image
from .runtime import LoadedModel, ModelLoadError, open_model
from .settings import VisionSettings

log = logging.getLogger(__name__)


class ModelState(enum.StrEnum):
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


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
        self._lock = threading.Lock()  # held for every use of the interpreter
        self._queue: collections.deque[_Job] = collections.deque()
        self._loader = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-load")
        self._workers = _Workers(max(2, os.cpu_count() or 1), "infer")
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
            warm = np.full(model.input_shape[1:], 128, dtype=np.uint8)
            out = self._invoke(warm, time.monotonic() + 600)
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
        """Stop the worker threads after the calls in progress; queued calls are cancelled."""
        self._workers.shutdown()
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
                num_threads=m.num_threads,
            )
        return out

    def require_ready(self) -> LoadedModel:
        """The loaded model; raises DetectorNotReady (saying why) while it loads or after it failed to."""
        if self.state is not ModelState.READY or self.model is None:
            raise DetectorNotReady(
                f"model failed to load: {self.error}"
                if self.state is ModelState.FAILED
                else "model is loading; retry shortly"
            )
        return self.model

    # -- inference -------------------------------------------------------------------------------------------

    def _submit(self, tensor: np.ndarray, deadline: float, payload: Any, future: _Outcome | None = None) -> _Outcome:
        """Queue one input tensor; its future gets (payload, RawOutput) or the exception that stopped it."""
        job = _Job(tensor, deadline, future or concurrent.futures.Future(), payload, time.perf_counter())
        self._queue.append(job)
        return job.future

    def _drain(self, until: concurrent.futures.Future[Any] | None = None) -> None:
        """Run queued jobs while this thread can take the interpreter lock.

        Whoever holds the lock runs every job queued meanwhile, and re-checks the queue after releasing it, so
        a job queued while another thread held the lock is never left behind. With `until`, stop once that
        future is done (the camera thread must get back to its frames) and hand any rest to a worker.

        A result is delivered just before the next invoke starts (which releases the GIL) or, for the last
        one, after the lock is released: then the waiting event loop finds the GIL free instead of contending
        with this thread's bookkeeping, which on two cores is worth a few hundred microseconds per request.
        """
        while self._queue:
            if not self._lock.acquire(blocking=False):
                return  # the holder runs our job: it re-checks the queue after releasing the lock
            deliver: Callable[[], None] | None = None
            try:
                while until is None or not until.done():
                    try:
                        job = self._queue.popleft()
                    except IndexError:
                        break
                    if deliver is not None:
                        deliver()
                        deliver = None
                    deliver = self._run(job)
                    if until is not None:
                        deliver()
                        deliver = None
            finally:
                self._lock.release()
                if deliver is not None:
                    deliver()
            if until is not None and until.done():
                if self._queue:
                    with contextlib.suppress(RuntimeError):  # shutting down: the queued callers time out
                        self._workers.submit(self._drain)
                return

    def _run(self, job: _Job) -> Callable[[], None]:
        """One job, under the lock; returns what delivers its outcome. Skipped if its caller gave up or its
        deadline passed."""
        if job.future.cancelled():
            return _nothing
        if time.monotonic() > job.deadline:
            return functools.partial(
                _settle, job.future, error=TimeoutError("deadline passed while waiting for the interpreter")
            )
        model = self.model
        assert model is not None
        interp = model.interpreter
        start = time.perf_counter()
        try:
            interp.set_tensor(model.input_index, job.tensor[np.newaxis])
            interp.invoke()
            invoked = time.perf_counter()
            b, c, s, n = (interp.get_tensor(i) for i in model.output_indices)
        except Exception as exc:
            return functools.partial(_settle, job.future, error=exc)
        invoke_s = invoked - start
        if self.on_invoke is not None:
            self.on_invoke(invoke_s)
        raw = RawOutput(b, c, s, n, (start - job.queued) * 1000, invoke_s * 1000)
        return functools.partial(_settle, job.future, result=(job.payload, raw))

    def _invoke(self, tensor: np.ndarray, deadline: float) -> RawOutput:
        """Blocking: queue one tensor, help run the queue, wait for this tensor's outputs."""
        future = self._submit(tensor, deadline, None)
        self._drain(until=future)
        try:
            _, raw = future.result(timeout=max(0.0, deadline - time.monotonic()))
        except concurrent.futures.TimeoutError:  # waited too long, or the job's deadline passed in the queue
            future.cancel()
            raise InferenceTimeout(
                f"inference took longer than {self.settings.infer_timeout_s:g} s (INFER_TIMEOUT_S)"
            ) from None
        return cast(RawOutput, raw)

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

    def _decode_and_queue(self, data: bytes, max_pixels: int, deadline: float, outcome: _Outcome) -> None:
        """On a worker: decode, queue, and run the queue if the interpreter is free. Errors go to `outcome`."""
        if outcome.cancelled():
            return  # the request timed out while this waited for a worker
        try:
            image = prepare_image(data, self.require_ready().input_size, max_pixels)
        except Exception as exc:
            _settle(outcome, error=exc)
            return
        self._submit(image.tensor, deadline, image, outcome)
        self._drain()

    async def detect_encoded(
        self,
        data: bytes,
        *,
        max_pixels: int,
        score_th: float | None = None,
        topk: int | None = None,
        started: float | None = None,
        timeout_s: float | None = None,
    ) -> tuple[DetectionResult, PreparedImage]:
        """Decode an uploaded image and detect objects in it on a worker thread, without blocking the event loop.

        Raises ImageError for bad data, DetectorNotReady, and InferenceTimeout past INFER_TIMEOUT_S: a timed-out
        request still waiting for a worker or for the interpreter is skipped, one already invoking finishes and
        its result is dropped. `started` (perf_counter) is where timings.total begins; `timeout_s` defaults to
        INFER_TIMEOUT_S.
        """
        self.require_ready()
        timeout = self.settings.infer_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout
        t0 = time.perf_counter() if started is None else started
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[tuple[Any, RawOutput]] = loop.create_future()
        outcome: _Outcome = concurrent.futures.Future()
        # The worker's last act before it waits for more work is to wake the loop (cheaper than wrap_future).
        outcome.add_done_callback(functools.partial(_wake_loop, loop, waiter))
        try:
            async with asyncio.timeout(timeout):
                # Submitted last, just before this thread goes idle: the woken worker finds the GIL free.
                self._workers.submit(self._decode_and_queue, data, max_pixels, deadline, outcome)
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


_Outcome = concurrent.futures.Future[tuple[Any, RawOutput]]


class _Workers:
    """A fixed set of threads running submitted calls in order: a lean ThreadPoolExecutor.

    Lean on purpose: when a worker has handed a result to the event loop, it goes straight back to waiting
    (releasing the GIL) instead of doing an executor's bookkeeping, so the woken event loop does not wait for
    the GIL first; on two cores that is worth about a tenth of a millisecond per request. A call's own errors
    are its business (every call here settles an outcome); anything escaping is logged, never kills a worker.
    """

    def __init__(self, count: int, name: str) -> None:
        self._calls: queue.SimpleQueue[tuple[Callable[..., None], tuple[Any, ...]] | None] = queue.SimpleQueue()
        self._closed = False
        self._threads = [threading.Thread(target=self._work, name=f"{name}_{i}", daemon=True) for i in range(count)]
        self._start_lock = threading.Lock()
        self._started = False  # threads start with the first call: a detector never used costs no threads

    def submit(self, fn: Callable[..., None], *args: Any) -> None:
        if self._closed:
            raise RuntimeError("the detector's workers are shut down")
        if not self._started:
            with self._start_lock:
                if not self._started:
                    for thread in self._threads:
                        thread.start()
                    self._started = True
        self._calls.put((fn, args))

    def _work(self) -> None:
        get = self._calls.get
        while (call := get()) is not None:
            fn, args = call
            try:
                fn(*args)
            except BaseException:
                log.exception("unexpected error in a detector worker")
            del call, fn, args

    def shutdown(self) -> None:
        """Drop the calls not started yet (their callers time out), finish the running ones, stop the threads."""
        self._closed = True
        with contextlib.suppress(queue.Empty):
            while True:
                self._calls.get_nowait()
        with self._start_lock:
            started, self._started = self._started, True  # no thread starts after this
        if not started:
            return
        for _ in self._threads:
            self._calls.put(None)
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join()


def _wake_loop(
    loop: asyncio.AbstractEventLoop, waiter: asyncio.Future[Any], outcome: concurrent.futures.Future[Any]
) -> None:
    """On the thread that settled `outcome`: hand it to the coroutine awaiting `waiter` on `loop`."""
    if not outcome.cancelled():
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(_copy_outcome, waiter, outcome)


def _copy_outcome(waiter: asyncio.Future[Any], outcome: concurrent.futures.Future[Any]) -> None:
    if waiter.done():
        return  # timed out or cancelled meanwhile
    error = outcome.exception()
    if error is not None:
        waiter.set_exception(error)
    else:
        waiter.set_result(outcome.result())


@dataclass(eq=False)
class _Job:
    tensor: np.ndarray
    deadline: float  # time.monotonic()
    future: _Outcome
    payload: Any  # handed back with the outputs (the decoded image of an /infer request)
    queued: float  # time.perf_counter()


def _nothing() -> None:
    pass


def _settle(future: concurrent.futures.Future[Any], result: Any = None, error: BaseException | None = None) -> None:
    """Complete a future unless its waiter already gave up (cancelled it)."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except concurrent.futures.InvalidStateError:
        pass
