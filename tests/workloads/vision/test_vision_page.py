"""The vision service's live page in a real headless chromium, against the real service on a loopback port.

A generated video of real photos (the cat, then the motorcycle, sliding over a brick wall) stands in for the camera;
the session's real Detector runs the camera loop and /infer. The page must draw a box for the right label on the
camera picture, say why a dead camera is dead, show /infer's boxes on an uploaded photo, and keep working behind a
bearer token. Screenshots: .cache/screenshots/ (listed at the end of the run).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import pytest
from browser import Browser, TokenGate, serve
from camera_media import write_photo_video
from fastapi import FastAPI
from fastapi.testclient import TestClient
from korall_workloads.vision.app import create_app
from korall_workloads.vision.camera.settings import CaptureSettings
from korall_workloads.vision.detector import Detector
from selenium.webdriver.common.by import By
from vision_helpers import SKIMAGE_DATA, settings

VIDEO_LABELS = ("cat", "motorcycle")

# One script, so that the list of boxes and the canvas are read between two frames, never across one.
DRAWN_BOX = """
const canvas = document.getElementById(arguments[0]);
const tags = [...document.querySelectorAll(arguments[1] + ' li')];
const tag = tags.find((li) => arguments[2].includes(li.dataset.label) && Number(li.dataset.score) > 0.5);
if (!tag || canvas.hidden) return null;
const [x0, y0, x1, y1] = tag.dataset.box.split(',').map(Number);
const scale = 1;  // both canvases are as wide as the image their boxes are in
const colour = getComputedStyle(tag).borderTopColor.match(/\\d+/g).map(Number);
const ctx = canvas.getContext('2d');
const x = Math.round(x0 * scale);
let hits = 0, samples = 0;
for (let y = Math.round((y0 + (y1 - y0) / 4) * scale); y < Math.round((y1 - (y1 - y0) / 4) * scale); y += 2) {
  const [r, g, b] = ctx.getImageData(x, y, 1, 1).data;
  samples += 1;
  if (Math.abs(r - colour[0]) < 40 && Math.abs(g - colour[1]) < 40 && Math.abs(b - colour[2]) < 40) hits += 1;
}
const inside = ctx.getImageData(Math.round((x0 + x1) / 2 * scale), Math.round((y0 + y1) / 2 * scale), 1, 1).data;
return {label: tag.dataset.label, score: Number(tag.dataset.score), hits, samples, inside: [...inside].slice(0, 3),
        frame: canvas.dataset.frameIndex || null};
"""


def drawn_box(browser: Browser, canvas: str, tags: str, labels: tuple[str, ...]) -> Any:
    """The first listed box of one of `labels` whose left edge is stroked in its colour on `canvas`, or None."""
    box = browser.js(DRAWN_BOX, canvas, tags, list(labels))
    return box if box and box["samples"] and box["hits"] >= 0.8 * box["samples"] else None


def text_with(browser: Browser, css: str, needle: str) -> str | None:
    """The text of `css` once it contains `needle`, else None."""
    text = browser.text(css)
    return text if needle in text else None


@pytest.fixture(scope="module")
def gate() -> TokenGate:
    return TokenGate()


@pytest.fixture(scope="module")
def camera_app(tmp_path_factory: pytest.TempPathFactory, detector: Detector, gate: TokenGate) -> Iterator[FastAPI]:
    video = write_photo_video(tmp_path_factory.mktemp("page") / "photos.avi", 60, fps=15)
    capture = CaptureSettings(source=str(video), loop=True, sample_every=2)
    app = create_app(settings(), detector=detector, capture=capture)
    gate.install(app)  # open until a test sets a token
    with serve(app) as url:
        app.state.url = url
        yield app


@pytest.fixture(scope="module")
def camera_server(camera_app: FastAPI) -> str:
    return str(camera_app.state.url)


def test_the_page_and_its_files_are_revalidated_by_etag(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert (
        page.headers["cache-control"] == "no-cache" and "default-src 'self'" in page.headers["content-security-policy"]
    )
    again = client.get("/", headers={"If-None-Match": page.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    for asset in ("static/vision.js", "static/korall.js", "static/korall.css", "static/favicon.svg"):
        reply = client.get(f"/{asset}")
        assert reply.status_code == 200 and reply.headers["cache-control"] == "no-cache" and reply.headers["etag"]
        assert asset in page.text or asset == "static/korall.js"  # korall.js is imported by vision.js
    assert 'from "./korall.js"' in client.get("/static/vision.js").text
    # Nothing from elsewhere, and only relative URLs (so the pages work through port-forward or a path prefix).
    for package in ("korall_workloads.vision", "korall_workloads.audio", "korall_workloads.common"):
        for file in (resources.files(package) / "static").iterdir():
            text = file.read_text().replace('xmlns="http://www.w3.org/2000/svg"', "")  # a name, not a fetch
            assert "http://" not in text and "https://" not in text, file.name
            assert not re.search(r"""(href|src)="/|(api|getJson|stream)\(["'`]/""", text), file.name
    missing = client.get("/static/nope.js")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_a_range_on_the_page_or_its_files_is_ignored_never_answered_in_plain_text(client: TestClient) -> None:
    """Starlette answers a malformed range 400 and one past the end 416, both in plain text, where every error of
    the services is JSON; the files are a few KB, so they are sent whole whatever the range."""
    whole = {path: client.get(path).content for path in ("/", "/static/korall.js")}
    for path, content in whole.items():
        for value in ("bytes=abc", "bytes=999999-", "bytes=0-9", "bytes=0-1,5-9", "lines=1-2"):
            reply = client.get(path, headers={"Range": value, "If-Range": "x"} if "," in value else {"Range": value})
            assert reply.status_code == 200 and reply.content == content, (path, value, reply.status_code)
            assert "accept-ranges" not in reply.headers and "content-range" not in reply.headers


def test_one_encode_per_frame_however_many_viewers(camera_app: FastAPI) -> None:
    """The page fetches each new frame once per viewer: two viewers of one frame cost one JPEG encode."""
    jpegs = camera_app.state.camera_jpegs
    with httpx.Client(base_url=camera_app.state.url, timeout=10) as http:
        for attempt in range(50):
            query = {"boxes": "false", "quality": str(50 + attempt)}  # a new quality: the first request must encode
            before = jpegs.encodes
            first = http.get("/snapshot.jpg", params=query)
            second = http.get("/snapshot.jpg", params=query)
            if first.status_code == 200 and first.headers["x-frame-index"] == second.headers["x-frame-index"]:
                break
        else:
            raise AssertionError("never got the same frame twice in a row")
    assert jpegs.encodes - before == 1 and first.content == second.content
    assert first.headers["cache-control"] == "no-store"


def test_the_live_page_draws_a_box_for_the_right_label_on_the_camera_picture(
    browser: Browser, camera_server: str
) -> None:
    browser.open(f"{camera_server}/")
    box = browser.wait(lambda: drawn_box(browser, "frame", "#now", VIDEO_LABELS), 15, "a box on the camera picture")
    assert box["label"] in VIDEO_LABELS and box["frame"] is not None
    assert sum(box["inside"]) > 0  # the picture is drawn under the box, not a blank canvas

    facts = browser.wait(lambda: text_with(browser, "#camera-facts", "inference latency"), 10, "the camera facts")
    assert "streaming" in facts and "640×480 MJPG @ 15.0 fps (file, FFMPEG)" in facts
    assert "ms invoke" in facts and "ms frame to result" in facts
    history = browser.wait(lambda: browser.text("#history tbody"), 5, "the history per label")
    assert box["label"] in history
    assert browser.js("return document.getElementById('problems').hidden") is True
    browser.screenshot("vision-camera")
    browser.screenshot("vision-camera-phone", size=(390, 844))
    assert browser.console_errors() == []


def test_a_dead_camera_shows_its_reason_on_the_page(browser: Browser, detector: Detector, tmp_path: Path) -> None:
    capture = CaptureSettings(source=str(tmp_path / "unplugged.avi"), max_reconnects=1, reconnect_min_s=0.1)
    with serve(create_app(settings(), detector=detector, capture=capture), browser) as url:
        browser.open(f"{url}/")
        reason = browser.wait(
            lambda: (c := httpx.get(f"{url}/health").json()["camera"])["state"] == "failed" and c["reason"],
            10,
            "the camera to fail",
        )
        banner = browser.wait(
            lambda: reason in browser.text("#problems") and browser.text("#problems"), 10, "the reason"
        )
        assert banner.startswith("The camera failed: ") and "unplugged.avi" in banner
        assert "camera failed" in browser.text("#summary")
        browser.screenshot("vision-dead-camera")
        assert browser.console_errors() == []


def test_without_a_camera_an_uploaded_photo_gets_its_boxes(
    browser: Browser, detector: Detector, tmp_path: Path
) -> None:
    with serve(create_app(settings(), detector=detector), browser) as url:
        browser.open(f"{url}/")
        browser.wait(lambda: "no camera" in browser.text("#summary"), 10, "the page to see there is no camera")
        assert browser.js("return document.getElementById('upload-details').open") is True
        assert browser.js("return document.getElementById('live').hidden") is True

        browser.driver.find_element(By.ID, "upload").send_keys(str(SKIMAGE_DATA / "chelsea.png"))
        box = browser.wait(lambda: drawn_box(browser, "upload-canvas", "#upload-list", ("cat",)), 15, "the cat's box")
        assert box["score"] > 0.7
        assert "in 451×300" in browser.text("#upload-status")  # chelsea.png, as /infer measured it
        browser.screenshot("vision-upload")

        not_a_photo = tmp_path / "notes.txt"
        not_a_photo.write_text("not a photo")
        browser.driver.find_element(By.ID, "upload").send_keys(str(not_a_photo))
        status = browser.wait(lambda: text_with(browser, "#upload-status", "could not use"), 10, "the refusal in words")
        assert "notes.txt" in status and "Content-Type is 'text/plain'; send image/jpeg" in status
        assert browser.console_errors(expected=lambda m: "status of 415" in m) == []


def test_behind_a_bearer_token_the_page_asks_for_one_and_sends_it(
    browser: Browser, camera_server: str, gate: TokenGate
) -> None:
    gate.token = "s3cret-token"
    try:
        browser.open(f"{camera_server}/")
        browser.js("sessionStorage.clear()")
        browser.open(f"{camera_server}/")
        why = browser.wait(lambda: browser.text("#auth .auth-why"), 10, "the token field")
        assert why == "This service needs an access token."
        assert browser.console_errors(expected=lambda m: "status of 401" in m) == []

        field = browser.driver.find_element(By.ID, "auth-token")
        field.send_keys("s3cret-token")
        field.submit()  # the page reloads with the token
        browser.wait(lambda: drawn_box(browser, "frame", "#now", VIDEO_LABELS), 15, "a box with the typed token")

        # A stale token in the tab's storage: the one in the URL's fragment takes its place before any call.
        browser.js("sessionStorage.setItem('korall.token', 'stale')")
        browser.leave()
        gate.seen.clear()
        browser.open(f"{camera_server}/#token=s3cret-token")
        browser.wait(lambda: drawn_box(browser, "frame", "#now", VIDEO_LABELS), 15, "a box with the token from the URL")
        assert browser.js("return location.hash") == ""  # the token left the address bar
        assert browser.js("return sessionStorage.getItem('korall.token')") == "s3cret-token"
        used = {path for path, auth in gate.seen if auth == "Bearer s3cret-token"}
        assert {"/detections/stream", "/snapshot.jpg"} <= used
        assert all(auth == "Bearer s3cret-token" for _, auth in gate.seen)
        assert browser.console_errors() == []
    finally:
        gate.token = None
