"""Every error case of the API: always JSON `{"error": {"code", "message"}}` with the right status."""

from __future__ import annotations

from collections.abc import Iterator

import korall_workloads.vision.detector as detector_module
import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from korall_workloads.vision.app import create_app
from korall_workloads.vision.detector import Detector
from PIL import Image
from vision_helpers import encode, photo_rgb, settings

LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def small(detector: Detector) -> Iterator[TestClient]:
    """An app with a 64 KiB upload limit and a 1 MP pixel limit on the shared detector."""
    with TestClient(create_app(settings(max_upload_bytes=LIMIT, max_image_pixels=1_000_000), detector=detector)) as c:
        yield c


def _error(r, status: int, code: str | None = None) -> str:  # type: ignore[no-untyped-def]
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    err = r.json()["error"]
    assert set(err) == {"code", "message"} and err["message"]
    if code is not None:
        assert err["code"] == code, err
    return str(err["message"])


def test_body_over_the_limit_by_content_length(small: TestClient) -> None:
    msg = _error(small.post("/infer", content=b"\xff" * (LIMIT + 1)), 413, "payload_too_large")
    assert "MAX_UPLOAD_BYTES" in msg


def test_chunked_body_over_the_limit_is_cut_off(small: TestClient) -> None:
    sent = []

    def chunks() -> Iterator[bytes]:
        for _ in range(100):
            sent.append(1)
            yield b"\xff" * 4096

    _error(small.post("/infer", content=chunks()), 413, "payload_too_large")


def test_multipart_over_the_limit(small: TestClient) -> None:
    big = encode(np.random.default_rng(0).integers(0, 255, (300, 300, 3), dtype=np.uint8), "PNG")
    assert len(big) > LIMIT
    _error(small.post("/infer", files={"file": ("x.png", big, "image/png")}), 413, "payload_too_large")


def test_unsupported_media_types(client: TestClient, jpegs: dict[str, bytes]) -> None:
    _error(client.post("/infer", content=jpegs["chelsea"], headers={"content-type": "text/plain"}), 415)
    _error(client.post("/infer", content=b"{}", headers={"content-type": "application/json"}), 415)
    _error(client.post("/infer", files={"file": ("a.txt", jpegs["chelsea"], "text/plain")}), 415)


def test_empty_bodies(client: TestClient) -> None:
    _error(client.post("/infer", content=b"", headers={"content-type": "image/jpeg"}), 400, "empty_body")
    _error(client.post("/infer"), 400, "empty_body")
    _error(client.post("/infer", files={"file": ("a.jpg", b"", "image/jpeg")}), 400, "empty_body")


def test_multipart_without_a_file_or_malformed(client: TestClient) -> None:
    _error(client.post("/infer", data={"name": "value"}, files={"other": (None, b"x")}), 400, "missing_file")
    bad = client.post(
        "/infer", content=b"not multipart at all", headers={"content-type": "multipart/form-data; boundary=XYZ"}
    )
    _error(bad, 400)
    _error(client.post("/infer", content=b"x", headers={"content-type": "multipart/form-data"}), 400)
    # Cut before its closing boundary: a truncated upload, said so (it was taken for a body without a file part).
    head = b'--XYZ\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
    cut = client.post(
        "/infer", content=head + b"\xff\xd8\xff", headers={"content-type": "multipart/form-data; boundary=XYZ"}
    )
    assert "closing boundary" in _error(cut, 400, "bad_request")


def test_corrupt_truncated_and_non_image_data(client: TestClient, jpegs: dict[str, bytes]) -> None:
    _error(client.post("/infer", content=b"GIF89a" + b"\x00" * 50), 422, "invalid_image")
    _error(client.post("/infer", content=jpegs["coffee"][: len(jpegs["coffee"]) // 3]), 422, "invalid_image")
    _error(client.post("/infer", content=b"%PDF-1.4 not an image"), 422, "invalid_image")
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>'
    _error(client.post("/infer", content=svg, headers={"content-type": "image/svg+xml"}), 415)


def test_decompression_bomb(client: TestClient) -> None:
    """A 48-megapixel PNG of zeros is a few kB: refused from its header, before decoding (limit 40 MP)."""
    bomb = encode(Image.new("L", (8000, 6000)), "PNG")
    assert len(bomb) < 100_000
    msg = _error(client.post("/infer", content=bomb, headers={"content-type": "image/png"}), 413, "image_too_large")
    assert "8000x6000" in msg and "MAX_IMAGE_PIXELS" in msg


def test_pixel_limit_from_settings(small: TestClient) -> None:
    _error(small.post("/infer", content=encode(Image.new("RGB", (1200, 1000)), "PNG")), 413, "image_too_large")


def test_inference_timeout_is_504_and_the_service_keeps_serving(detector: Detector, jpegs: dict[str, bytes]) -> None:
    """INFER_TIMEOUT_S=0.001 on the real model: no inference finishes in 1 ms, so every /infer gets 504."""
    with TestClient(create_app(settings(infer_timeout_s=0.001), detector=detector)) as c:
        for _ in range(3):
            msg = _error(c.post("/infer", content=jpegs["chelsea"]), 504, "timeout")
            assert "INFER_TIMEOUT_S" in msg
        assert c.get("/health").json()["model"]["state"] == "ready"
        assert c.get("/ready").status_code == 200
        assert 'korall_vision_errors_total{code="timeout"} 3.0' in c.get("/metrics").text
    # the interpreter was not harmed by the abandoned calls: the same detector still finds the cat
    assert detector.detect(photo_rgb("chelsea")).detections[0].label == "cat"


def test_while_loading_ready_and_infer_are_503_and_health_says_loading(jpegs: dict[str, bytes]) -> None:
    """Without entering the lifespan the detector never starts loading: the state every pod has at first."""
    detector = Detector(settings())
    try:
        c = TestClient(create_app(settings(), detector=detector))  # no `with`: no lifespan, no loading
        health = c.get("/health")
        assert health.status_code == 200 and health.json()["model"]["state"] == "loading"
        for reply in (c.get("/ready"), c.post("/infer", content=jpegs["chelsea"])):
            assert "loading" in _error(reply, 503, "not_ready") and reply.headers["retry-after"] == "1"
    finally:
        detector.close()


def test_failed_model_gives_503_with_the_reason(jpegs: dict[str, bytes]) -> None:
    """ACCELERATOR=edgetpu on a machine without libedgetpu: the model cannot load, the service says why."""
    with TestClient(create_app(settings(accelerator="edgetpu"))) as c:
        app_detector = c.app.state.detector  # type: ignore[attr-defined]
        app_detector.start_loading().result(timeout=30)
        health = c.get("/health")
        assert health.status_code == 200
        assert health.json()["model"]["state"] == "failed"
        assert "ACCELERATOR=edgetpu" in health.json()["model"]["error"]
        for reply in (c.get("/ready"), c.post("/infer", content=jpegs["chelsea"])):
            assert "libedgetpu" in _error(reply, 503, "not_ready") and "retry-after" not in reply.headers


def test_unexpected_failure_is_a_json_500(
    detector: Detector, jpegs: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No real input reaches an unexpected exception (they are all mapped), so a bug is simulated in decoding."""

    def broken(*_: object) -> None:
        raise KeyError("simulated bug")

    monkeypatch.setattr(detector_module, "decode_image", broken)
    # raise_server_exceptions=False: answer like a real server instead of re-raising into the test
    with TestClient(create_app(settings(), detector=detector), raise_server_exceptions=False) as c:
        msg = _error(c.post("/infer", content=jpegs["chelsea"]), 500, "internal_error")
    assert "KeyError" in msg


def test_wrong_method_and_path(client: TestClient) -> None:
    _error(client.get("/infer"), 405, "method_not_allowed")
    _error(client.get("/nope"), 404, "not_found")


_CONTENT_TYPES = st.sampled_from(
    ["image/jpeg", "image/png", "application/octet-stream", "", "text/plain", "multipart/form-data; boundary=b"]
)
_PNG_HEAD = encode(Image.new("RGB", (8, 8)), "PNG")
_JPEG_HEAD = encode(Image.new("RGB", (8, 8)), "JPEG")
_PREFIXES = [b"", _PNG_HEAD[:40], _JPEG_HEAD[:60], b"GIF89a", b"BM", b"II*\x00", b"RIFF"]
_PART_HEAD = b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\nContent-Type: image/png\r\n\r\n'
_PREFIXES += [_PART_HEAD, _PART_HEAD + _PNG_HEAD]  # multipart-shaped bodies for the multipart/form-data draws


@hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    prefix=st.sampled_from(
        [
            b"",
            _PNG_HEAD[:40],
            _JPEG_HEAD[:60],
            b"GIF89a",
            b"BM",
            b"II*\x00",
            b"RIFF",
            _PART_HEAD,
            _PART_HEAD + _PNG_HEAD,
        ]
    ),
    body=st.binary(max_size=2048),
    ctype=_CONTENT_TYPES,
    mutate=st.integers(min_value=0, max_value=len(_PNG_HEAD) - 1),
)
def test_generated_bodies_never_crash(small: TestClient, prefix: bytes, body: bytes, ctype: str, mutate: int) -> None:
    data = prefix + body
    if not body and prefix == b"":
        # also flip one byte of a real PNG: a near-valid file exercises the decoders' error paths
        raw = bytearray(_PNG_HEAD)
        raw[mutate] ^= 0xFF
        data = bytes(raw)
    headers = {"content-type": ctype} if ctype else {}
    r = small.post("/infer", content=data, headers=headers)
    assert r.status_code in (200, 400, 413, 415, 422), r.text
    assert r.headers["content-type"] == "application/json"
    payload = r.json()
    assert ("detections" in payload) if r.status_code == 200 else set(payload["error"]) == {"code", "message"}
