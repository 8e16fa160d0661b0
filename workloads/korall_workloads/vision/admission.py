"""Load shedding for /infer: at most INFER_QUEUE_MAX requests in progress, and their bodies within a byte budget.

Without it a burst queues without bound: every waiting request holds its body (up to MAX_UPLOAD_BYTES) and its
decoded image, latency grows past any deadline, and memory past the pod's limit. A request is admitted when it
arrives (before its body is read) or refused at once with 503 `overloaded` and Retry-After: a client or a load
balancer can then go elsewhere or come back, and the requests already in progress keep their latency.

The admitted request reserves the bytes of its body on its ticket as they are read (`upload.read_image_bytes`):
all bodies held at once stay within UPLOAD_BUDGET_BYTES, or the one that would not fit is shed too. Both are
released when the reply is sent; after a large body (TRIM_AFTER_BYTES) the heap's free memory is given back to the
system (glibc keeps it otherwise). Everything here runs on the event loop: no lock.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from korall_workloads.common.errors import Overloaded

from .decode_cost import MIB, give_back_memory

RETRY_AFTER_S = 1.0
TRIM_AFTER_BYTES = 8 * MIB


class InferQueueFull(Overloaded):
    """INFER_QUEUE_MAX requests are in progress already."""

    code = "overloaded"


class Ticket:
    """One admitted request's share: the body bytes it holds."""

    def __init__(self, admission: Admission) -> None:
        self._admission = admission
        self.reserved = 0

    def reserve(self, nbytes: int) -> None:
        """Hold `nbytes` more of the upload budget, or raise Overloaded (nothing reserved)."""
        admission = self._admission
        if admission.reserved + nbytes > admission.upload_budget:
            raise Overloaded(
                f"uploads in progress hold {admission.reserved} bytes of the {admission.upload_budget} allowed "
                f"(UPLOAD_BUDGET_BYTES); retry in a moment",
                retry_after_s=RETRY_AFTER_S,
            )
        admission.reserved += nbytes
        self.reserved += nbytes


class Admission:
    """The requests /infer has in progress and the body bytes they hold (see the module docstring)."""

    def __init__(self, max_in_flight: int, upload_budget: int) -> None:
        self.max_in_flight = max_in_flight
        self.upload_budget = upload_budget
        self.in_flight = 0
        self.reserved = 0

    @contextmanager
    def admit(self) -> Iterator[Ticket]:
        """A ticket for one request, released on exit; raises InferQueueFull when `max_in_flight` are in."""
        if self.in_flight >= self.max_in_flight:
            raise InferQueueFull(
                f"{self.in_flight} requests are in progress, the most this service queues (INFER_QUEUE_MAX); "
                "retry in a moment",
                retry_after_s=RETRY_AFTER_S,
            )
        self.in_flight += 1
        ticket = Ticket(self)
        try:
            yield ticket
        finally:
            self.in_flight -= 1
            self.reserved -= ticket.reserved
            if ticket.reserved >= TRIM_AFTER_BYTES:
                give_back_memory()
