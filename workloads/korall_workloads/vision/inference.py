"""Input tensors through the model's interpreters from any thread: queued, then run back to back by whoever is free.

A LiteRT interpreter is not thread-safe, and the service has two kinds of callers: /infer workers and the camera's
inference thread. A caller queues its tensor as a job, then tries to take an interpreter: if one is free, the
caller runs the queued jobs on it one after another, handing each result to the future its owner waits on; if all
are busy, a thread holding one runs this job too (it re-checks the queue after letting go). So:

- one request alone runs on the worker that decoded it: no hand-off beyond the worker's own;
- under load one thread invokes back to back, with no wake-up of another thread between two invokes, while the
  other cores decode the next images: throughput is that of the bare interpreter;
- nothing can leave the interpreter half-used, and a job whose deadline passed or whose waiter gave up (cancelled
  its future) is skipped, never run; an invoke already running finishes and its result is dropped.

The simpler alternative, workers that each block until the interpreter is free and then invoke, was measured
against this in paired runs (issue 14): 0.93 and 0.98 of this design's throughput at four concurrent requests on
two cores, within the noise of a loaded machine but in the expected direction: there, every invoke waits for a
sleeping thread to wake and take the GIL.

Several interpreters (one per core on a CPU node, `runtime.open_model`) keep this shape: one queue, a lock per
interpreter, and a thread runs the queue on whichever interpreter it can take, so N requests invoke side by side.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import functools
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Interpreter:
    """An allocated LiteRT interpreter and where its SSD tensors are."""

    interpreter: Any
    input_index: int
    output_indices: tuple[int, int, int, int]  # boxes, classes, scores, count


@dataclass(frozen=True)
class RawOutput:
    """The SSD post-processing outputs of one invoke, and where its time went."""

    boxes: np.ndarray
    classes: np.ndarray
    scores: np.ndarray
    count: np.ndarray
    queue_ms: float  # waiting for the interpreter while other images ran
    invoke_ms: float


Outcome = concurrent.futures.Future[tuple[Any, RawOutput]]
"""What a job's owner waits on: (its payload, the outputs), or the exception that stopped it."""


@dataclass(eq=False)
class _Job:
    tensor: np.ndarray
    deadline: float  # time.monotonic()
    future: Outcome
    payload: Any  # handed back with the outputs (the decoded image of an /infer request)
    queued: float  # time.perf_counter()


class InterpreterQueue:
    """The jobs waiting for one interpreter, run by whichever caller finds it free (see the module docstring)."""

    def __init__(
        self,
        interpreters: Sequence[Interpreter],
        hand_over: Callable[[Callable[[], None]], object],
        on_invoke: Callable[[float], None] | None = None,
    ) -> None:
        """`hand_over(fn)` runs `fn` on another thread (an executor's submit): a blocking caller that must get back
        to its own work leaves the rest of the queue to it. `on_invoke(seconds)` is told each invoke's time."""
        if not interpreters:
            raise ValueError("an InterpreterQueue needs at least one interpreter")
        # Each interpreter with the lock held for every use of it.
        self._slots = [(interpreter, threading.Lock()) for interpreter in interpreters]
        self._hand_over = hand_over
        self.on_invoke = on_invoke
        self._jobs: collections.deque[_Job] = collections.deque()

    @property
    def interpreters(self) -> int:
        return len(self._slots)

    def _take(self) -> tuple[Interpreter, threading.Lock] | None:
        """A free interpreter, its lock now held; None when all are busy."""
        for slot in self._slots:
            if slot[1].acquire(blocking=False):
                return slot
        return None

    def submit(
        self, tensor: np.ndarray, deadline: float, payload: Any = None, future: Outcome | None = None
    ) -> Outcome:
        """Queue one input tensor ([H, W, 3] uint8 at the input size); run it with `run_pending`."""
        job = _Job(tensor, deadline, future or concurrent.futures.Future(), payload, time.perf_counter())
        self._jobs.append(job)
        return job.future

    def run(self, tensor: np.ndarray, deadline: float) -> RawOutput:
        """Blocking: queue one tensor, help run the queue until it is done, return its outputs. TimeoutError past
        `deadline` (time.monotonic()), its job then skipped if it has not started."""
        future = self.submit(tensor, deadline)
        self.run_pending(until=future)
        try:
            _, raw = future.result(timeout=max(0.0, deadline - time.monotonic()))
        except TimeoutError:  # waited too long, or the job's deadline passed in the queue
            future.cancel()
            raise
        return raw

    def run_pending(self, until: concurrent.futures.Future[Any] | None = None) -> None:
        """Run queued jobs while this thread can take the interpreter.

        Whoever holds it runs every job queued meanwhile, and re-checks the queue after letting go, so a job
        queued while another thread held it is never left behind. With `until`, stop once that future is done and
        hand any rest over to another thread.

        A result is delivered just before the next invoke starts (which releases the GIL) or, for the last one,
        after the lock is released: the woken event loop then finds the GIL free instead of contending with this
        thread's bookkeeping, which on two cores is worth a few hundred microseconds per request.
        """
        while self._jobs:
            slot = self._take()
            if slot is None:
                return  # every holder runs our job: each re-checks the queue after releasing its lock
            interpreter, lock = slot
            deliver: Callable[[], None] | None = None
            try:
                while until is None or not until.done():
                    try:
                        job = self._jobs.popleft()
                    except IndexError:
                        break
                    if deliver is not None:
                        deliver()
                    deliver = self._run(interpreter, job)
                    if until is not None:
                        deliver()
                        deliver = None
            finally:
                lock.release()
                if deliver is not None:
                    deliver()
            if until is not None and until.done():
                if self._jobs:
                    with contextlib.suppress(RuntimeError):  # shutting down: the queued callers time out
                        self._hand_over(self.run_pending)
                return

    def _run(self, slot: Interpreter, job: _Job) -> Callable[[], None]:
        """One job on `slot`, under its lock; returns what delivers its outcome. Skipped if its waiter gave up or its
        deadline passed."""
        if job.future.cancelled():
            return _nothing
        if time.monotonic() > job.deadline:
            return functools.partial(
                settle, job.future, error=TimeoutError("deadline passed while waiting for the interpreter")
            )
        interp = slot.interpreter
        start = time.perf_counter()
        try:
            interp.set_tensor(slot.input_index, job.tensor[np.newaxis])
            interp.invoke()
            invoked = time.perf_counter()
            boxes, classes, scores, count = (interp.get_tensor(i) for i in slot.output_indices)
        except Exception as exc:
            return functools.partial(settle, job.future, error=exc)
        invoke_s = invoked - start
        if self.on_invoke is not None:
            self.on_invoke(invoke_s)
        raw = RawOutput(boxes, classes, scores, count, (start - job.queued) * 1000, invoke_s * 1000)
        return functools.partial(settle, job.future, result=(job.payload, raw))


def _nothing() -> None:
    pass


def settle(future: concurrent.futures.Future[Any], result: Any = None, error: BaseException | None = None) -> None:
    """Complete a future unless its waiter already gave up (cancelled it), from any thread."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except concurrent.futures.InvalidStateError:
        pass
