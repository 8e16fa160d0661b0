"""The audio service's live page in a real headless chromium, and the level stream it draws from.

The service is the real one on a loopback port, replaying a WAV of espeak-ng speech and a sox noise burst in real
time, as a microphone would deliver it. The page must show the speech and the loud event on its timeline, move its
level meter while the voice plays, say what is under way, and show a failing source's reason. Screenshots:
.cache/screenshots/ (listed at the end of the run).
"""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path
from typing import Any

import httpx
from browser import Browser, serve
from korall_tools.synth import RATE, Scene
from korall_workloads.audio.app import create_app
from korall_workloads.audio.pipeline import ChunkPipeline
from korall_workloads.audio.settings import AudioSettings
from korall_workloads.audio.vad import SileroVad

TOLERANCE_S = 0.25

# The extent (x from, x to) of each event colour on the timeline's canvas, read in one go.
COLOURED_SPANS = """
const canvas = document.getElementById('timeline');
const {width, height} = canvas;
const data = canvas.getContext('2d').getImageData(0, 0, width, height).data;
const want = {speech: [0x2e, 0x9e, 0x4f], loud_noise: [0xd9, 0x48, 0x0f]};
const spans = {};
for (const [type, rgb] of Object.entries(want)) {
  let from = null, to = null, count = 0;
  for (let y = 0; y < height; y += 1) {
    for (let x = 0; x < width; x += 1) {
      const i = (y * width + x) * 4;
      if (data[i + 3] === 255 && rgb.every((c, k) => Math.abs(data[i + k] - c) < 8)) {
        count += 1;
        from = from === null ? x : Math.min(from, x);
        to = to === null ? x : Math.max(to, x);
      }
    }
  }
  spans[type] = {from, to, count};
}
return spans;
"""


def listed_events(browser: Browser) -> list[dict[str, Any]]:
    """The page's event list, oldest first."""
    items = browser.js(
        "return [...document.querySelectorAll('#events li')]"
        ".map((li) => ({type: li.dataset.type, start: Number(li.dataset.start), end: Number(li.dataset.end)}));"
    )
    return list(reversed(items))


def test_each_level_record_carries_its_frames_and_the_events_under_way(scene_wav: tuple[Path, Scene]) -> None:
    """What /level/stream sends, chunk by chunk, on the events' clock: the meter's and the timeline's feed."""
    _, scene = scene_wav
    settings = AudioSettings(source="unused.wav")
    pipeline = ChunkPipeline(settings, RATE, SileroVad())
    hop = pipeline.hop_frames
    levels = [pipeline.process(scene.samples[i : i + hop, None]).level() for i in range(0, scene.samples.size, hop)]
    for before, after in itertools.pairwise(levels):
        assert after["frames"]["start_s"] == before["now_s"]  # consecutive, no frame twice, none left out
    full = levels[1]
    assert len(full["frames"]["dbfs"]) == 31 and full["frames"]["step_s"] == 0.032
    assert full["now_s"] == round(full["frames"]["start_s"] + 31 * 0.032, 3)
    speech = next(t for t in scene.truth if t.type == "speech")
    during = [lv for lv in levels if speech.start_s + 0.5 < lv["now_s"] < speech.end_s - 0.2]
    assert during and all("speech" in lv["open"] for lv in during)
    assert abs(during[0]["open"]["speech"] - speech.start_s) <= TOLERANCE_S
    assert all(-40 < lv["dbfs"] < -10 and lv["peak_dbfs"] > -12 for lv in during)
    assert levels[0]["open"] == {"silence": 0.0} and levels[0]["dbfs"] == -120.0  # 1.5 s of digital silence first


def test_the_page_shows_the_speech_and_the_loud_event_on_one_timeline(
    browser: Browser, scene_wav: tuple[Path, Scene]
) -> None:
    path, scene = scene_wav
    app = create_app(AudioSettings(source=str(path), realtime=True))
    with serve(app, browser) as url:
        browser.open(f"{url}/")
        browser.js("document.querySelector('[data-span=\"30\"]').click()")
        now = browser.wait(lambda: "speech since" in (t := browser.text("#now")) and t, 10, "speech under way")
        assert browser.js("return document.getElementById('now').dataset.open") == "speech"
        loudest = browser.wait(
            lambda: (v := browser.js("return Number(document.getElementById('meter').dataset.dbfs)")) > -35 and v,
            5,
            "the meter to rise with the voice",
        )
        assert loudest < 0
        browser.wait(lambda: len(listed_events(browser)) == len(scene.truth), 15, "every event of the WAV")
        events = listed_events(browser)
        assert [e["type"] for e in events] == [t.type for t in scene.truth]
        for event, truth in zip(events, scene.truth, strict=True):
            assert abs(event["start"] - truth.start_s) <= TOLERANCE_S and abs(event["end"] - truth.end_s) <= TOLERANCE_S
        speech = next(e for e in events if e["type"] == "speech")
        assert abs(float(now.split("speech since ")[1].split(" s")[0]) - speech["start"]) < 0.1

        spans = browser.wait(
            lambda: (s := browser.js(COLOURED_SPANS))["speech"]["count"] > 200 and s["loud_noise"]["count"] > 50 and s,
            5,
            "the speech and the bang drawn",
        )
        assert spans["speech"]["to"] < spans["loud_noise"]["from"]  # one clock: the voice, then the bang
        loud = next(e for e in events if e["type"] == "loud_noise")
        ratio = (spans["loud_noise"]["from"] - spans["speech"]["from"]) / (loud["start"] - speech["start"])
        width = (spans["speech"]["to"] - spans["speech"]["from"]) / (speech["end"] - speech["start"])
        assert abs(ratio - width) / width < 0.1  # the same pixels per second for both
        browser.wait(lambda: "finished" in browser.text("#now"), 10, "the end of the file")
        browser.screenshot("audio-timeline")
        browser.screenshot("audio-timeline-phone", size=(390, 844))
        assert browser.console_errors() == []

        browser.open(f"{url}/")  # after the end: the timeline comes back from the service's history
        browser.wait(lambda: len(listed_events(browser)) == len(scene.truth), 10, "the history")
        spans = browser.wait(lambda: (s := browser.js(COLOURED_SPANS))["loud_noise"]["count"] > 50 and s, 5, "drawn")
        assert spans["speech"]["count"] > 200
        assert browser.console_errors() == []


def test_a_failing_source_shows_its_reason_on_the_page(browser: Browser, tmp_path: Path) -> None:
    app = create_app(AudioSettings(source=str(tmp_path / "unplugged.wav"), retry_max_s=0.5))
    with serve(app, browser) as url:
        browser.open(f"{url}/")
        error = browser.wait(lambda: httpx.get(f"{url}/health").json()["capture"]["error"], 10, "the source error")
        stem = error.split(":")[0]
        banner = browser.wait(lambda: stem in (t := browser.text("#problems")) and t, 10, "the reason on the page")
        assert banner.startswith("The audio source fails: ") and "unplugged.wav" in banner
        assert "no audio" in browser.text("#now")
        browser.screenshot("audio-source-error")
        assert browser.console_errors() == []


def test_the_level_stream_starts_with_the_latest_level(scene_wav: tuple[Path, Scene]) -> None:
    path, scene = scene_wav
    app = create_app(AudioSettings(source=str(path), realtime=False))
    with serve(app) as url:
        deadline = time.monotonic() + 30
        while httpx.get(f"{url}/health").json()["capture"]["state"] != "finished":
            assert time.monotonic() < deadline, "the WAV was not processed in 30 s"
            time.sleep(0.05)
        with httpx.stream("GET", f"{url}/level/stream", timeout=10) as reply:
            assert reply.headers["content-type"].startswith("text/event-stream")
            lines = reply.iter_lines()
            assert next(lines) == "event: level"
            level = json.loads(next(lines).removeprefix("data: "))
    assert scene.seconds - 1.1 < level["now_s"] <= scene.seconds and level["open"] == {
        "silence": level["open"]["silence"]
    }
