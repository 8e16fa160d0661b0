"""SELF_TEST_GOLDEN_SET: /ready answers 200 only once the model found what the golden set says, on the real model.

The readiness part of the catalog's rollback (docs/catalog.md): a new model whose pods never get ready is rolled
back by the operator. Here, a model with the wrong labels loads and warms up, but its self-test fails, so the
service stays unready and says why; the right labels make it ready.
"""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from korall_workloads.vision.app import create_app
from vision_helpers import MODELS, settings

GOLDEN = MODELS / "golden"


def _ready_after_load(client: TestClient) -> tuple[int, dict, dict]:
    client.app.state.detector.start_loading().result(timeout=60)  # type: ignore[attr-defined]
    ready = client.get("/ready")
    return ready.status_code, ready.json(), client.get("/health").json()["model"]


def test_the_self_test_passes_before_ready_turns_200() -> None:
    with TestClient(create_app(settings(self_test_golden_set=GOLDEN))) as c:
        code, _, model = _ready_after_load(c)
    assert code == 200
    assert (model["state"], model["self_test"]) == ("ready", "4/4 golden images passed")


def test_a_model_that_fails_its_self_test_stays_unready_and_says_why(tmp_path: Path) -> None:
    lines = [line.split(maxsplit=1) for line in (MODELS / "coco_labels.txt").read_text().splitlines() if line.strip()]
    names = [name for _, name in lines]
    shifted = tmp_path / "labels.txt"
    shifted.write_text("".join(f"{i}  {n}\n" for (i, _), n in zip(lines, names[1:] + names[:1], strict=True)))
    with TestClient(create_app(settings(self_test_golden_set=GOLDEN, labels_path=str(shifted)))) as c:
        code, body, model = _ready_after_load(c)
    assert code == 503 and body["error"]["code"] == "not_ready"
    assert model["state"] == "failed"
    assert "self-test on golden set" in model["error"]
    assert "chelsea.jpg: expected cat at 0.6 or more, found dog 0.84" in body["error"]["message"]


def test_an_unreadable_golden_set_keeps_the_service_unready(tmp_path: Path) -> None:
    with TestClient(create_app(settings(self_test_golden_set=tmp_path / "absent"))) as c:
        code, body, _ = _ready_after_load(c)
    assert code == 503 and "self-test: golden set" in body["error"]["message"]
