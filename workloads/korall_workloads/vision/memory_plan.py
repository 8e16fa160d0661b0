"""The vision service's worst case in memory, added up at start and checked against the container's limit.

Every request's memory is bounded by a setting, so the whole service's is bounded by their sum:

    baseline (the process with its model loaded)        measured: 112 MiB
  + interpreters x 20 MiB                                measured per CPU interpreter (arena, packed weights)
  + UPLOAD_BUDGET_BYTES                                  every request body held at once (admission.py)
  + DECODE_BUDGET_BYTES                                  the one large decode running (decode_cost.py)
  + decode workers x DECODE_SERIAL_BYTES                 the small decodes running side by side (a worker per
                                                         interpreter and one more)
  + HTTP_MAX_CONNECTIONS x 128 KiB                       each connection's buffers: 64 KiB of body before the
                                                         server stops reading, 32 KiB of reply, the objects
  + the camera's frames                                  (CAPTURE_BUFFER_FRAMES + 4) x width x height x 3

The limit is MEMORY_LIMIT_BYTES (the operator passes the container's `limits.memory` through the Downward API), else
the cgroup's own (v2 memory.max, v1 memory.limit_in_bytes). With NUM_INTERPRETERS unset, as many interpreters as
there are cores run, or as many as fit in the limit if fewer (a pod without a CPU limit sees every core of a large
node); a sum that does not fit even so stops the service at start with one line that says which setting to lower,
instead of an OOM kill under load.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from korall_workloads.common.http_settings import HttpSettings

from .camera.settings import CaptureSettings
from .decode_cost import MIB
from .settings import VisionSettings, usable_cores

BASELINE_BYTES = 112 * MIB
PER_INTERPRETER_BYTES = 20 * MIB
PER_CONNECTION_BYTES = 128 * 1024
CAMERA_EXTRA_FRAMES = 4  # the frame being read, the one inferred, the latest result, a snapshot being drawn
UNLIMITED = 1 << 60  # what cgroup v1 reports for no limit (9223372036854771712) is above this

CGROUP_MEMORY_FILES = (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"))


class MemoryPlanError(Exception):
    """The configured limits cannot fit in the container's memory; the message says which to lower."""


def container_memory_limit(files: tuple[Path, ...] = CGROUP_MEMORY_FILES) -> int | None:
    """The cgroup's memory limit in bytes, or None when there is none (or no cgroup file to read)."""
    for path in files:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text == "max":
            return None
        try:
            value = int(text)
        except ValueError:
            continue
        return None if value >= UNLIMITED else value
    return None


@dataclass(frozen=True)
class MemoryPlan:
    limit: int | None
    interpreters: int
    parts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    def describe(self) -> str:
        shown = ", ".join(f"{name} {value / MIB:.0f}" for name, value in self.parts.items())
        limit = f"{self.limit / MIB:.0f} MiB" if self.limit is not None else "none"
        return f"worst case {self.total / MIB:.0f} MiB ({shown}), limit {limit}"


def decode_workers(interpreters: int) -> int:
    """The detector's decode workers (detector.py): one per interpreter and one more, at least two."""
    return max(2, interpreters + 1)


def plan_memory(
    settings: VisionSettings,
    http: HttpSettings,
    capture: CaptureSettings | None = None,
    limit: int | None = None,
    cores: int | None = None,
) -> MemoryPlan:
    """Add up the worst case and fit the interpreters in `limit`; raises MemoryPlanError when it cannot fit."""
    cores = cores if cores is not None else usable_cores()
    parts = {
        "baseline": BASELINE_BYTES,
        "uploads": settings.upload_budget_bytes,
        "large decode": settings.decode_budget_bytes,
        "connections": http.max_connections * PER_CONNECTION_BYTES,
    }
    if capture is not None and capture.enabled:
        parts["camera"] = (capture.buffer_frames + CAMERA_EXTRA_FRAMES) * capture.width * capture.height * 3
    fixed = sum(parts.values())
    interpreters = settings.num_interpreters or cores
    if limit is not None and not settings.num_interpreters:
        # each interpreter brings its own memory and a decode worker: fixed + (n + 1) x serial + n x per <= limit
        room = limit - fixed - settings.decode_serial_bytes
        interpreters = max(1, min(interpreters, room // (settings.decode_serial_bytes + PER_INTERPRETER_BYTES)))
    parts["small decodes"] = decode_workers(interpreters) * settings.decode_serial_bytes
    parts["interpreters"] = interpreters * PER_INTERPRETER_BYTES
    plan = MemoryPlan(limit, interpreters, parts)
    if limit is not None and plan.total > limit:
        raise MemoryPlanError(
            f"the limits cannot fit in the memory limit: {plan.describe()}; lower UPLOAD_BUDGET_BYTES, "
            "DECODE_BUDGET_BYTES, DECODE_SERIAL_BYTES, HTTP_MAX_CONNECTIONS or NUM_INTERPRETERS, or raise the "
            "container's memory limit"
        )
    return plan
