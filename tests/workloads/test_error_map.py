"""The one error map: every domain error either service can raise gets the status its documentation promises.

The domain errors carry a code and no status; `common.responses.http_status` decides the status from their kind.
Here every such class in korall_workloads (found by walking the subclasses once both apps are imported) is checked
against the documented tables, so a new error cannot ship with an undocumented code or a status the docs deny.
"""

from __future__ import annotations

import re
from pathlib import Path

import korall_workloads.audio.app
import korall_workloads.common.server
import korall_workloads.vision.app  # noqa: F401  (importing the apps and the server defines every domain error)
import pytest
from korall_workloads.common.errors import ServiceError
from korall_workloads.common.responses import HTTP_STATUS, http_status

DOCS = Path(__file__).resolve().parents[2] / "docs"


def domain_errors() -> list[type[ServiceError]]:
    found, todo = [], [ServiceError]
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if cls.__module__.startswith("korall_workloads."):
            found.append(cls)
    return sorted(set(found), key=lambda c: (c.__module__, c.__name__))


def documented() -> dict[str, set[int]]:
    """code -> statuses, from docs/vision.md's error table and the `503 `code`` mentions in the other pages."""
    out: dict[str, set[int]] = {}
    table = (DOCS / "vision.md").read_text()
    for statuses, codes in re.findall(r"^\| ([\d /]+) \| ([`\w /]+) \|", table, re.MULTILINE):  # 404 / 405 too
        for status, code in zip(statuses.split(" / "), codes.split(" / "), strict=True):
            out.setdefault(code.strip("`"), set()).add(int(status))
    for page in ("capture.md", "audio.md"):
        for status, code in re.findall(r"\b(\d{3}) `(\w+)`", (DOCS / page).read_text()):
            out.setdefault(code, set()).add(int(status))
    return out


def test_the_error_kinds_cover_every_documented_status() -> None:
    assert sorted(HTTP_STATUS.values()) == [400, 401, 403, 404, 408, 413, 415, 422, 429, 431, 500, 503, 504]


@pytest.mark.parametrize(
    "error", domain_errors(), ids=lambda c: f"{c.__module__.removeprefix('korall_workloads.')}.{c.__name__}"
)
def test_each_domain_error_gets_its_documented_status(error: type[ServiceError]) -> None:
    promised = documented()
    assert error.code in promised, f"{error.__name__}: code {error.code!r} is not documented"
    assert http_status(error("message")) in promised[error.code]
    assert "status" not in vars(error)  # the kind decides, not the error


def test_the_audio_and_camera_errors_are_found() -> None:
    names = {c.__name__ for c in domain_errors()}
    assert {
        "CaptureNotReady",
        "TooManyClients",
        "CameraNotConfigured",
        "CameraUnavailable",
        "InferenceTimeout",
    } <= names
