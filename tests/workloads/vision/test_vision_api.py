"""The HTTP API on the real model with real photos: detections, both upload forms, overrides, the side routes."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient
from korall_workloads.vision.detector import Detector
from korall_workloads.vision.schemas import InferResponse
from PIL import Image
from vision_helpers import EMPTY_SCENE, PHOTOS, encode, photo_rgb


@pytest.mark.parametrize("name", sorted(PHOTOS))
def test_real_photo_gives_the_right_label(client: TestClient, jpegs: dict[str, bytes], name: str) -> None:
    label, min_score = PHOTOS[name]
    r = client.post("/infer", content=jpegs[name], headers={"content-type": "image/jpeg"})
    assert r.status_code == 200, r.text
    body = r.json()
    best = body["detections"][0]
    assert best["label"] == label and best["score"] >= min_score, body["detections"]
    h, w = photo_rgb(name).shape[:2]
    assert body["image"] == {"width": w, "height": h, "format": "JPEG", "bytes": len(jpegs[name])}
    for d in body["detections"]:
        box, norm = d["box"], d["box_norm"]
        assert 0 <= box["xmin"] <= box["xmax"] <= w and 0 <= box["ymin"] <= box["ymax"] <= h
        assert box["xmax"] == pytest.approx(norm["xmax"] * w, abs=0.1)
        assert d["score"] >= 0.5  # the default SCORE_TH
    assert body["model"]["accelerator"] == "cpu"
    assert body["model"]["sha256"] == "7046f31a72ec0045a57b94199144c96cf5840c7dc106b808b64a1ed5559aa0cd"
    t = body["timings_ms"]
    assert set(t) == {"decode", "preprocess", "queue", "invoke", "postprocess", "total"}
    assert t["invoke"] > 0 and t["total"] >= t["decode"] + t["preprocess"] + t["invoke"]


def test_a_scene_with_nothing_coco_like_gives_no_confident_detection(
    client: TestClient, jpegs: dict[str, bytes]
) -> None:
    r = client.post("/infer?score_th=0.3", content=jpegs[EMPTY_SCENE], headers={"content-type": "image/jpeg"})
    assert r.status_code == 200
    assert r.json()["detections"] == []


def test_png_and_grayscale_and_rgba_uploads(client: TestClient) -> None:
    rgb = photo_rgb("chelsea")
    rgba = Image.fromarray(rgb).convert("RGBA")
    gray = Image.fromarray(rgb).convert("L")
    for data, ctype in ((encode(rgba, "PNG"), "image/png"), (encode(gray, "PNG"), "application/octet-stream")):
        r = client.post("/infer", content=data, headers={"content-type": ctype})
        assert r.status_code == 200, r.text
        assert r.json()["detections"][0]["label"] == "cat"


def test_multipart_upload(client: TestClient, jpegs: dict[str, bytes]) -> None:
    r = client.post(
        "/infer",
        files={"file": ("coffee.jpg", jpegs["coffee"], "image/jpeg")},
        data={"note": "a form field before or after the file is ignored"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["detections"][0]["label"] == "cup"


def test_multipart_with_a_preamble_and_an_epilogue(client: TestClient, jpegs: dict[str, bytes]) -> None:
    """RFC 2046 lets a multipart body start with text before its first delimiter and end with text after the
    last; both are ignored (python-multipart alone refuses a preamble)."""
    part = b'--XYZ\r\nContent-Disposition: form-data; name="file"; filename="c.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
    body = b"This is a multi-part message in MIME format.\r\n" + part + jpegs["coffee"] + b"\r\n--XYZ--\r\nbye\r\n"
    r = client.post("/infer", content=body, headers={"content-type": "multipart/form-data; boundary=XYZ"})
    assert r.status_code == 200, r.text
    assert r.json()["detections"][0]["label"] == "cup"
    # A preamble with no delimiter after it is still no multipart body.
    bad = client.post(
        "/infer", content=b"preamble only\r\n--XY", headers={"content-type": "multipart/form-data; boundary=XYZ"}
    )
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "bad_request"


def test_score_and_topk_overrides(client: TestClient, jpegs: dict[str, bytes]) -> None:
    many = client.post("/infer?score_th=0.1&topk=20", content=jpegs["coffee"]).json()["detections"]
    assert len(many) > 2
    two = client.post("/infer?score_th=0.1&topk=2", content=jpegs["coffee"]).json()["detections"]
    assert two == many[:2]
    high = client.post("/infer?score_th=0.99", content=jpegs["coffee"]).json()["detections"]
    assert high == []
    for bad in ("score_th=1.5", "score_th=-0.1", "topk=0", "topk=101", "score_th=abc"):
        r = client.post(f"/infer?{bad}", content=jpegs["coffee"])
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_input", (bad, r.text)


def test_detector_is_shared_and_agrees_with_http(
    client: TestClient, detector: Detector, jpegs: dict[str, bytes]
) -> None:
    """The camera loop calls Detector.detect on raw frames; it must see what /infer sees."""
    frame = photo_rgb("motorcycle_left")
    direct = detector.detect(frame)
    assert direct.detections[0].label == "motorcycle"
    assert (direct.width, direct.height) == (frame.shape[1], frame.shape[0])
    via_http = client.post("/infer", content=encode(frame, "PNG")).json()["detections"]
    assert via_http[0]["label"] == "motorcycle"
    assert via_http[0]["score"] == pytest.approx(direct.detections[0].score, abs=1e-3)
    with pytest.raises(ValueError):
        detector.detect(np.zeros((4, 4), np.uint8))


def test_health_ready_models_metrics(client: TestClient, jpegs: dict[str, bytes]) -> None:
    health = client.get("/health").json()
    assert health["status"] == "ok"
    model = health["model"]
    assert model["state"] == "ready" and model["accelerator"] == "cpu" and model["input_shape"] == [1, 300, 300, 3]
    assert client.get("/ready").json() == {"ready": True}

    listed = client.get("/models").json()["models"]
    by_file = {m["file"]: m for m in listed}
    cpu = by_file["mobilenet_ssd_v2_coco_quant_postprocess.tflite"]
    tpu = by_file["mobilenet_ssd_v2_coco_quant_postprocess_edgetpu.tflite"]
    assert cpu["active"] and not tpu["active"]
    assert (cpu["edgetpu"], tpu["edgetpu"]) == (False, True)
    assert cpu["bytes"] == 6175408 and cpu["sha256_verified"] is True

    client.post("/infer", content=jpegs["chelsea"])
    client.post("/infer", content=b"")
    text = client.get("/metrics").text
    assert 'korall_vision_requests_total{route="/infer",status="200"}' in text
    assert 'korall_vision_errors_total{code="empty_body"}' in text
    assert "korall_vision_invoke_seconds_bucket" in text
    assert 'korall_vision_model_info{accelerator="cpu",file="mobilenet_ssd_v2_coco_quant_postprocess.tflite"' in text
    assert client.get("/no/such/path").json()["error"]["code"] == "not_found"
    assert 'route="unmatched",status="404"' in client.get("/metrics").text


def test_infer_json_matches_the_documented_schema(client: TestClient, jpegs: dict[str, bytes]) -> None:
    """/infer writes its JSON from plain dicts: it must be exactly what the documented pydantic model dumps."""
    r = client.post("/infer?score_th=0.1&topk=5", content=jpegs["coffee"], headers={"content-type": "image/jpeg"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert 2 <= len(r.json()["detections"]) <= 5
    assert InferResponse.model_validate_json(r.content).model_dump_json().encode() == r.content
    params = {p["name"]: p for p in client.get("/openapi.json").json()["paths"]["/infer"]["post"]["parameters"]}
    assert params["score_th"]["schema"] == {"type": "number", "minimum": 0.0, "maximum": 1.0}
    assert params["topk"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 100}
