"""The detector's worker threads, and the hand-over of a worker's outcome to the coroutine awaiting it.

A lean ThreadPoolExecutor on purpose: a plain executor (`loop.run_in_executor`, `asyncio.wrap_future`) was
measured against it in issue 14, each round trip event loop -> worker -> event loop with the caches cold, as after
an invoke: the executor took 35 us more to start the call and 6-15 us more to wake the loop with its result,
about 0.05 ms per request against a +3 ms budget for everything /infer adds to the bare invoke (bench_vision.py).
When a worker here has handed its outcome to the loop, it goes straight back to waiting (releasing the GIL)
instead of doing an executor's bookkeeping, so the woken loop does not wait for the GIL first.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class Workers:
    """A fixed set of threads running submitted calls in order.

    A call's own errors are its business (every call here settles an outcome); anything escaping is logged and
    never kills a worker. Threads start with the first call: a detector never used costs no threads.
    """

    def __init__(self, count: int, name: str) -> None:
        self._calls: queue.SimpleQueue[tuple[Callable[..., object], tuple[Any, ...]] | None] = queue.SimpleQueue()
        self._closed = False
        self._threads = [threading.Thread(target=self._work, name=f"{name}_{i}", daemon=True) for i in range(count)]
        self._start_lock = threading.Lock()
        self._started = False

    def submit(self, fn: Callable[..., object], *args: Any) -> None:
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


def awaitable(outcome: concurrent.futures.Future[Any]) -> asyncio.Future[Any]:
    """An asyncio future on the running loop that completes with `outcome` (cheaper than `asyncio.wrap_future`):
    the thread that settles `outcome` wakes the loop as its last act."""
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[Any] = loop.create_future()
    outcome.add_done_callback(functools.partial(_wake_loop, loop, waiter))
    return waiter


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
