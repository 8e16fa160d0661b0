"""The validator's outcome as one compact JSON object, small enough for a termination message.

Kubernetes keeps 4096 bytes of a container's termination message; the operator reads the result from there
(docs/catalog.md). When the per-image outcomes do not fit, the detections found are dropped first, then images
from the end (`omitted` counts them); the verdict, reason and message always fit.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from korall_contract import MAX_TERMINATION_MESSAGE, VALIDATION_RESULT_SCHEMA

from korall_workloads.vision.golden import CaseOutcome

Verdict = Literal["Passed", "Failed", "Error"]
MAX_MESSAGE = 600


@dataclass
class Result:
    """`Failed`: the model was judged and is not fit. `Error`: it could not be judged (its golden set, the
    configuration, a bug); the operator then tries again when the spec changes."""

    sha256: str
    verdict: Verdict
    reason: str
    message: str
    duration_s: float = 0.0
    checks: dict[str, str] = field(default_factory=dict)
    images: list[CaseOutcome] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return {"Passed": 0, "Failed": 1, "Error": 2}[self.verdict]

    def as_json(self, limit: int = MAX_TERMINATION_MESSAGE) -> str:
        """The JSON text, at most `limit` bytes (UTF-8)."""
        message = re.sub(r"\s+", " ", self.message).strip()
        if len(message) > MAX_MESSAGE:
            message = message[: MAX_MESSAGE - 3] + "..."
        base: dict[str, Any] = {
            "schema": VALIDATION_RESULT_SCHEMA,
            "sha256": self.sha256,
            "result": self.verdict,
            "reason": self.reason,
            "message": message,
            "durationSeconds": round(self.duration_s, 2),
            "checks": {k: v[:200] for k, v in self.checks.items()},
        }
        images = [o.as_json() for o in self.images]
        for with_found in (True, False):
            shown = images if with_found else [{k: v for k, v in i.items() if k != "found"} for i in images]
            for keep in range(len(shown), -1, -1):
                body = {**base, "images": shown[:keep], "omitted": len(shown) - keep}
                text = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
                if len(text.encode()) <= limit:
                    return text
        return json.dumps({**base, "checks": {}, "images": [], "omitted": len(images)}, separators=(",", ":"))
