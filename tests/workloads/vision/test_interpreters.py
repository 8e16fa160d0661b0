"""One interpreter per core (issue 15): the job queue runs requests side by side on several real LiteRT interpreters,
never two threads on one interpreter, with the results a single interpreter gives."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from typing import Any

import numpy as np
from korall_workloads.vision.detector import Detector
from korall_workloads.vision.inference import Interpreter, InterpreterQueue
from korall_workloads.vision.settings import VisionSettings, auto_num_threads, usable_cores
from vision_helpers import photo_rgb, settings


class Watched:
    """A real interpreter that records who invokes it; its first invoke waits at `barrier` until every interpreter
    is invoking, which only happens if the queue really runs them side by side (else the barrier times out)."""

    def __init__(self, interpreter: Any, barrier: threading.Barrier, errors: list[str]) -> None:
        self.interpreter, self.barrier, self.errors = interpreter, barrier, errors
        self.user: threading.Thread | None = None
        self.invokes = 0

    def set_tensor(self, index: int, value: np.ndarray) -> None:
        self.interpreter.set_tensor(index, value)

    def get_tensor(self, index: int) -> np.ndarray:
        return self.interpreter.get_tensor(index)

    def invoke(self) -> None:
        if self.user is not None:
            self.errors.append(f"{threading.current_thread().name} invoked while {self.user.name} did")
        self.user = threading.current_thread()
        try:
            if self.invokes == 0:
                self.barrier.wait(timeout=10)
            self.invokes += 1
            self.interpreter.invoke()
        finally:
            self.user = None


def test_two_interpreters_run_two_requests_at_once_with_identical_results() -> None:
    det = Detector(settings(num_interpreters=2, num_threads=1))
    det.load()
    try:
        model = det.model
        assert model is not None and len(model.interpreters) == 2
        frame = photo_rgb("chelsea")
        expected = det.detect(frame).detections
        barrier, errors = threading.Barrier(2), []
        watched = [Watched(i, barrier, errors) for i in model.interpreters]
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            queue = InterpreterQueue(
                [Interpreter(w, model.input_index, model.output_indices) for w in watched], pool.submit
            )
            det._queue = queue  # the detector's own queue, over the watched interpreters
            results = list(pool.map(lambda _: det.detect(frame).detections, range(12)))
        assert not errors and not barrier.broken
        assert all(r == expected for r in results)
        assert all(w.invokes > 0 for w in watched) and sum(w.invokes for w in watched) == 12
    finally:
        det.close()


def test_interpreters_and_threads_default_to_the_cores() -> None:
    cores = usable_cores()
    s = VisionSettings(num_interpreters=0, num_threads=0)
    assert s.resolved_interpreters("cpu") == cores and s.resolved_interpreters("edgetpu") == 1
    assert s.resolved_num_threads == auto_num_threads(cores) == 1  # one thread each
    one = VisionSettings(num_interpreters=1, num_threads=0)
    assert one.resolved_num_threads == max(1, cores - 1)  # one interpreter keeps a core for decoding
    assert VisionSettings(num_interpreters=3, num_threads=2).resolved_num_threads == 2


def test_a_job_past_its_deadline_is_skipped_on_every_interpreter() -> None:
    det = Detector(settings(num_interpreters=2, num_threads=1))
    det.load()
    try:
        assert det._queue is not None and det._queue.interpreters == 2
        tensor = np.zeros((300, 300, 3), np.uint8)
        late = det._queue.submit(tensor, time.monotonic() - 1)
        det._queue.run_pending()
        assert isinstance(late.exception(timeout=5), TimeoutError)
    finally:
        det.close()
