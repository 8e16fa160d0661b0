"""The camera pipeline on real video files (written by the tests) and the real detector on the CPU model.

There is no camera on this machine: video files stand in for it (OpenCV reads them through the same
VideoCapture as a device, paced at their native fps). Where a test needs a camera behaviour a file cannot
show (a stream that hangs), or a detector behaviour the real one does not have (being slow on purpose,
or recording what reached it), the double is named and explained in the test's docstring. The `detector`
fixture (conftest) is the service's real Detector on the bundled CPU model.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from camera_media import read_stamp, write_photo_video, write_stamped_video
from korall_contract import VisionEnv
from korall_tools.demo_video import moving_photo_frames, write_video
from korall_workloads.vision.camera.motion import MotionGate
from korall_workloads.vision.camera.pipeline import CameraPipeline, FrameResult
from korall_workloads.vision.camera.ring import FrameRing
from korall_workloads.vision.camera.settings import CaptureSettings
from korall_workloads.vision.camera.source import (
    Negotiated,
    SourceError,
    SourceKind,
    classify,
    open_source,
    redact,
)
from korall_workloads.vision.camera.state import CameraState, StateTracker
from korall_workloads.vision.detector import Detector
from pydantic import ValidationError


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def accounted(status: dict[str, Any]) -> int:
    """Sampled frames whose fate is known: inferred, failed, skipped as still, or dropped (any reason)."""
    return int(
        status["frames_inferred"]
        + status["detect_errors"]
        + status["frames_still"]
        + sum(status["frames_dropped"].values())
    )


@pytest.fixture
def run_pipeline() -> Iterator[Callable[..., CameraPipeline]]:
    started: list[CameraPipeline] = []

    def start(settings: CaptureSettings, detector: Any, **kwargs: Any) -> CameraPipeline:
        pipeline = CameraPipeline(settings, detector, **kwargs)
        pipeline.start()
        started.append(pipeline)
        return pipeline

    yield start
    for pipeline in started:
        pipeline.stop()


class RecordingDetector:
    """Test double: returns no detections at once and records the frame index stamped into each frame's pixels.

    The question here is which frames reach the detector, not what is in them; an instant detector makes the
    answer independent of how busy the machine is.
    """

    ready = True

    def __init__(self) -> None:
        self.stamps: list[int] = []

    def detect(self, rgb: np.ndarray) -> dict[str, Any]:
        self.stamps.append(read_stamp(rgb))
        return {"detections": [], "timings_ms": {"invoke": 0.0}}


class SlowDetector:
    """Test double: a deliberately slow detector (sleeps `delay` s per frame), far slower than the frame rate.

    A real model that slow does not exist here; the point is to show that capture does not wait for it.
    """

    ready = True

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.calls = 0

    def detect(self, rgb: np.ndarray) -> dict[str, Any]:
        self.calls += 1
        time.sleep(self.delay)
        return {"detections": [], "timings_ms": {"invoke": self.delay * 1000}}


# -- detections ------------------------------------------------------------------------------------------------


def test_detections_on_camera_frames_name_the_right_objects(
    tmp_path: Path, detector: Detector, run_pipeline: Callable[..., CameraPipeline]
) -> None:
    """The cat (first half of the video) and the motorcycle (second half) are found as they slide across."""
    frames = 30
    video = write_photo_video(tmp_path / "photos.avi", frames, fps=15)
    results: list[FrameResult] = []
    settings = CaptureSettings(source=str(video), sample_every=3, reconnect_min_s=30, reconnect_max_s=30)
    pipeline = run_pipeline(settings, detector, on_result=results.append)
    wait_for(lambda: pipeline.status()["frames_captured"] >= frames, 10, "the whole video")
    wait_for(lambda: accounted(pipeline.status()) == pipeline.status()["frames_sampled"], 5, "the last inference")
    assert len(results) >= 6  # 10 sampled; a very busy machine may make the worker skip one for a newer one
    for result in results:
        top = max(result.detections, key=lambda d: d["score"])
        expected = "cat" if result.frame_index < frames // 2 else "motorcycle"
        assert top["label"] == expected, (result.frame_index, result.detections)
        assert top["score"] > 0.6
        box = top["box"]
        assert 0 <= box["xmin"] < box["xmax"] <= 640 and 0 <= box["ymin"] < box["ymax"] <= 480
        assert result.timings_ms["invoke"] > 0 and result.timings_ms["frame_to_result"] >= result.timings_ms["invoke"]
        assert (result.width, result.height) == (640, 480)
    labels = {max(r.detections, key=lambda d: d["score"])["label"] for r in results}
    assert labels == {"cat", "motorcycle"}


# -- sampling and the ring ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("every", [1, 3, 5])
def test_sampling_takes_exactly_every_nth_frame(
    tmp_path: Path, every: int, run_pipeline: Callable[..., CameraPipeline]
) -> None:
    """Every Nth frame is sampled, and each inferred frame is the one its index says (read from its pixels).

    The worker takes the newest sampled frame; should the machine be so busy that it misses one (a superseded
    drop), the drop must be counted, so inferred + dropped still equals the sampled frames.
    """
    frames = 30
    video = write_stamped_video(tmp_path / "stamped.avi", frames, fps=20)
    recorder = RecordingDetector()
    settings = CaptureSettings(
        source=str(video), sample_every=every, buffer_frames=64, reconnect_min_s=30, reconnect_max_s=30
    )
    results: list[FrameResult] = []
    pipeline = run_pipeline(settings, recorder, on_result=results.append)
    expected = list(range(0, frames, every))
    wait_for(lambda: pipeline.status()["frames_captured"] >= frames, 10, "the whole video")
    wait_for(lambda: accounted(pipeline.status()) == len(expected), 5, "every sampled frame")
    status = pipeline.status()
    assert status["frames_captured"] == frames and status["frames_sampled"] == len(expected)
    inferred = [r.frame_index for r in results]
    assert recorder.stamps == inferred  # the pixels that reached the detector are those frames
    assert status["frames_dropped"]["ring_full"] == 0
    assert len(inferred) + status["frames_dropped"]["superseded"] == len(expected)
    assert set(inferred) <= set(expected) and inferred == sorted(inferred)
    if not status["frames_dropped"]["superseded"]:  # the usual case: the instant detector kept up
        assert inferred == expected


def test_ring_drops_the_oldest_and_hands_out_the_newest() -> None:
    ring: FrameRing[int] = FrameRing(3)
    assert [ring.put(i) for i in range(5)] == [False, False, False, True, True]
    assert len(ring) == 3 and ring.counters.dropped_full == 2 and ring.counters.max_depth == 3
    taken = ring.take_newest(timeout=0)
    assert taken is not None and taken.item == 4 and taken.skipped == [2, 3] and taken.superseded == 2
    assert len(ring) == 0 and ring.take_newest(timeout=0.01) is None


def test_slow_detector_keeps_the_queue_bounded_drops_are_counted_and_capture_fps_holds(
    tmp_path: Path, run_pipeline: Callable[..., CameraPipeline]
) -> None:
    """A 0.25 s detector against a 30 fps source: the ring never exceeds its size, and capture keeps 30 fps."""
    fps, frames, buffer = 30.0, 75, 3
    video = write_stamped_video(tmp_path / "fast.avi", frames, fps=fps)
    slow = SlowDetector(0.25)
    settings = CaptureSettings(source=str(video), buffer_frames=buffer, reconnect_min_s=30, reconnect_max_s=30)
    pipeline = run_pipeline(settings, slow)
    started = time.monotonic()
    wait_for(lambda: pipeline.status()["frames_captured"] >= 45, 10, "45 frames")
    mid = pipeline.status()
    wait_for(lambda: pipeline.status()["frames_captured"] >= frames, 10, "the whole video")
    elapsed = time.monotonic() - started
    wait_for(lambda: pipeline.status()["state"] == "reconnecting", 5, "the end of the file")
    time.sleep(0.3)  # the last inference
    status = pipeline.status()
    # capture was paced by the file, not by the detector: 75 frames at 30 fps take ~2.5 s, not 75 x 0.25 s
    assert elapsed < frames / fps * 1.25 + 0.5, elapsed
    assert mid["capture_fps"] >= 0.9 * fps, mid
    assert status["queue_max_depth"] <= buffer
    dropped = status["frames_dropped"]
    assert dropped["ring_full"] + dropped["superseded"] > 40
    assert status["frames_inferred"] + dropped["ring_full"] + dropped["superseded"] == status["frames_sampled"]
    assert status["frames_inferred"] <= elapsed / 0.25 + 2


# -- camera loss -----------------------------------------------------------------------------------------------


def test_end_of_stream_reconnects_and_the_state_says_so(
    tmp_path: Path, run_pipeline: Callable[..., CameraPipeline]
) -> None:
    video = write_stamped_video(tmp_path / "short.avi", 8, fps=20)
    settings = CaptureSettings(source=str(video), reconnect_min_s=0.4)
    pipeline = run_pipeline(settings, RecordingDetector())
    wait_for(lambda: pipeline.status()["state"] == "streaming", 5, "streaming")
    wait_for(lambda: pipeline.status()["state"] == "reconnecting", 5, "end of stream")
    status = pipeline.status()
    assert "end of video file" in status["reason"] and "retrying in 0.4 s" in status["reason"]
    wait_for(lambda: pipeline.status()["reconnects"] >= 1 and pipeline.status()["state"] == "streaming", 5, "reconnect")
    assert pipeline.status()["frames_captured"] > 8


def test_loop_rewinds_a_file_without_reconnecting(tmp_path: Path, run_pipeline: Callable[..., CameraPipeline]) -> None:
    video = write_stamped_video(tmp_path / "loop.avi", 6, fps=30)
    results: list[FrameResult] = []
    settings = CaptureSettings(source=str(video), loop=True, buffer_frames=32)
    pipeline = run_pipeline(settings, RecordingDetector(), on_result=results.append)
    wait_for(lambda: pipeline.status()["frames_captured"] >= 20, 5, "three loops")
    status = pipeline.status()
    assert status["state"] == "streaming" and status["reconnects"] == 0
    assert len(results) >= 10 and max(r.frame_index for r in results) >= 12
    assert all(read_stamp(r.image) == r.frame_index % 6 for r in results)  # frame 6 is the file's frame 0 again


def test_a_vanished_source_reconnects_with_backoff_and_recovers(
    tmp_path: Path, run_pipeline: Callable[..., CameraPipeline]
) -> None:
    """The file disappears (as a USB camera does when unplugged), then comes back."""
    video = write_stamped_video(tmp_path / "cam.avi", 6, fps=30)
    hidden = tmp_path / "unplugged.avi"
    settings = CaptureSettings(source=str(video), reconnect_min_s=0.05, reconnect_max_s=0.4)
    pipeline = run_pipeline(settings, RecordingDetector())
    wait_for(lambda: pipeline.status()["state"] == "streaming", 5, "streaming")
    os.rename(video, hidden)
    wait_for(lambda: "does not exist" in pipeline.status()["reason"], 5, "the loss to be noticed")
    wait_for(lambda: "retrying in 0.4 s" in pipeline.status()["reason"], 5, "the backoff to reach its cap")
    status = pipeline.status()
    assert status["state"] == "reconnecting" and status["reconnects"] >= 4
    os.rename(hidden, video)
    wait_for(lambda: pipeline.status()["state"] == "streaming", 5, "recovery")


def test_a_camera_missing_for_a_long_time_is_still_retried(run_pipeline: Callable[..., CameraPipeline]) -> None:
    """Over a thousand failed attempts (hours of an unplugged camera at the default backoff) end nothing."""
    attempts = 0

    def unplugged(settings: CaptureSettings) -> Any:
        nonlocal attempts
        attempts += 1
        raise SourceError("camera device /dev/video0 does not exist")

    settings = CaptureSettings(source="/dev/video0", reconnect_min_s=1e-6, reconnect_max_s=1e-6)
    pipeline = run_pipeline(settings, RecordingDetector(), source_opener=unplugged)
    wait_for(lambda: attempts > 1100 or not pipeline._threads[0].is_alive(), 20, "many attempts")
    assert pipeline._threads[0].is_alive()
    assert pipeline.status()["state"] == "reconnecting"
    assert settings.reconnect_delay(10**6) == settings.reconnect_max_s


def test_a_missing_device_is_a_clear_error_state_not_a_crash(run_pipeline: Callable[..., CameraPipeline]) -> None:
    retrying = run_pipeline(CaptureSettings(source="/dev/video99", reconnect_min_s=0.05), RecordingDetector())
    giving_up = run_pipeline(
        CaptureSettings(source="/dev/video99", reconnect_min_s=0.05, max_reconnects=2), RecordingDetector()
    )
    wait_for(lambda: giving_up.status()["state"] == "failed", 5, "failed")
    reason = giving_up.status()["reason"]
    assert "camera device /dev/video99 does not exist" in reason and "gave up after 2 reconnects" in reason
    status = retrying.status()
    assert status["state"] == "reconnecting" and "/dev/video99 does not exist" in status["reason"]
    assert status["frames_captured"] == 0 and retrying.latest() is None


def test_a_gstreamer_pipeline_without_gstreamer_support_fails_once_with_the_reason(
    run_pipeline: Callable[..., CameraPipeline],
) -> None:
    settings = CaptureSettings(source="videotestsrc ! videoconvert ! appsink", reconnect_min_s=0.05)
    pipeline = run_pipeline(settings, RecordingDetector())
    wait_for(lambda: pipeline.status()["state"] in ("failed", "streaming"), 5, "a verdict")
    if pipeline.status()["state"] == "failed":  # opencv-python-headless from PyPI: no GStreamer
        assert "no GStreamer support" in pipeline.status()["reason"]
        assert pipeline.status()["reconnects"] == 0


class HangingSource:
    """Stands in for a camera that stops delivering (no camera here): `frames` frames, then read() blocks for
    `hang_s` (as a V4L2 read waits for its timeout) and fails."""

    def __init__(self, frames: int, hang_s: float) -> None:
        self.description = "device test-camera"
        self.negotiated = Negotiated("device", "test", 64, 48, 30.0, "YUYV")
        self._left = frames
        self._hang_s = hang_s
        self.closed = False

    def read(self) -> np.ndarray:
        if self._left > 0:
            self._left -= 1
            time.sleep(1 / 30)
            return np.zeros((48, 64, 3), np.uint8)
        time.sleep(self._hang_s)
        raise SourceError("device test-camera stopped delivering frames (read timeout)")

    def close(self) -> None:
        self.closed = True


def test_a_camera_that_stops_delivering_is_reported_stalled_then_reconnected(
    run_pipeline: Callable[..., CameraPipeline],
) -> None:
    opens: list[HangingSource] = []

    def opener(_: CaptureSettings) -> HangingSource:
        opens.append(HangingSource(frames=5, hang_s=1.2))
        return opens[-1]

    settings = CaptureSettings(source="/dev/video0", stall_timeout_s=0.4, reconnect_min_s=0.1)
    pipeline = run_pipeline(settings, RecordingDetector(), source_opener=opener)
    wait_for(lambda: pipeline.status()["state"] == "streaming", 5, "streaming")
    wait_for(lambda: pipeline.status()["state"] == "stalled", 5, "the stall")
    assert "no frame for more than 0.4 s" in pipeline.status()["reason"]
    wait_for(lambda: pipeline.status()["state"] == "reconnecting", 5, "the read timeout")
    assert "stopped delivering frames" in pipeline.status()["reason"]
    assert opens[0].closed  # released before the backoff, so a replugged device can be opened again
    wait_for(lambda: pipeline.status()["state"] == "streaming" and len(opens) >= 2, 5, "the reconnect")


# -- configuration and sources ---------------------------------------------------------------------------------


def test_settings_come_from_the_contract_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(VisionEnv.CAPTURE_SOURCE, "/dev/video2")
    monkeypatch.setenv(VisionEnv.CAPTURE_PIXEL_FORMAT, "yuyv")
    monkeypatch.setenv(VisionEnv.CAPTURE_SAMPLE_EVERY, "3")
    monkeypatch.setenv(VisionEnv.CAPTURE_LOOP, "true")
    settings = CaptureSettings()
    assert settings.enabled and settings.source == "/dev/video2" and settings.pixel_format == "YUYV"
    assert (settings.width, settings.height, settings.fps) == (640, 480, 15.0)
    assert settings.sample_every == 3 and settings.loop
    monkeypatch.setenv(VisionEnv.CAPTURE_SOURCE, "  ")
    assert not CaptureSettings().enabled
    monkeypatch.setenv(VisionEnv.CAPTURE_PIXEL_FORMAT, "H264")
    with pytest.raises(ValidationError, match="MJPG"):
        CaptureSettings()


def test_backoff_doubles_up_to_its_cap() -> None:
    settings = CaptureSettings(reconnect_min_s=0.5, reconnect_max_s=3)
    assert [settings.reconnect_delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    with pytest.raises(ValidationError, match="must be >="):
        CaptureSettings(reconnect_min_s=5, reconnect_max_s=1)


def test_sources_are_classified_and_credentials_redacted() -> None:
    assert classify("/dev/video0") is SourceKind.DEVICE and classify("2") is SourceKind.DEVICE
    assert classify("v4l2src ! videoconvert ! appsink") is SourceKind.GSTREAMER
    assert classify("rtsp://cam.local/stream") is SourceKind.URL and classify("http://x/mjpg") is SourceKind.URL
    assert classify("clips/door.mp4") is SourceKind.FILE
    assert redact("rtsp://admin:secret@cam.local:554/s") == "rtsp://***@cam.local:554/s"


def test_a_file_reports_what_it_delivers(tmp_path: Path) -> None:
    video = write_stamped_video(tmp_path / "n.avi", 3, fps=12)
    source = open_source(CaptureSettings(source=str(video)))
    try:
        assert source.negotiated.as_dict() == {
            "kind": "file",
            "backend": "FFMPEG",
            "width": 320,
            "height": 240,
            "fps": 12.0,
            "fourcc": "MJPG",
        }
        assert source.read().shape == (240, 320, 3)
    finally:
        source.close()
    with pytest.raises(SourceError, match="does not exist"):
        open_source(CaptureSettings(source=str(tmp_path / "nope.mp4")))


def test_camera_state_enum_matches_the_documented_states() -> None:
    assert [s.value for s in CameraState] == [
        "connecting",
        "streaming",
        "stalled",
        "reconnecting",
        "failed",
        "stopped",
    ]


def test_the_state_listener_sees_transitions_in_the_order_they_happened() -> None:
    """Two threads move the state at once (the capture thread back to streaming, an HTTP thread to stalled).

    The listener (the korall_capture_state metric) must end on the state the tracker holds, not on whichever
    callback happened to run last.
    """
    seen: list[CameraState] = []
    in_stalled = threading.Event()
    release = threading.Event()

    def listener(state: CameraState) -> None:
        if state is CameraState.STALLED:
            in_stalled.set()
            release.wait(5)
        seen.append(state)

    tracker = StateTracker(on_change=listener)
    tracker.set(CameraState.STREAMING, "frames arriving")
    stall = threading.Thread(target=tracker.set, args=(CameraState.STALLED, "no frame"))
    stall.start()
    assert in_stalled.wait(5)
    resume = threading.Thread(target=tracker.set, args=(CameraState.STREAMING, "frames arriving again"))
    resume.start()
    resume.join(0.3)  # gives it the time to overtake the stalled callback, if it can
    release.set()
    stall.join(5)
    resume.join(5)
    assert tracker.current.state is CameraState.STREAMING
    assert seen[-1] is tracker.current.state


class BrokenDriverSource(HangingSource):
    """Stands in for a camera driver that raises something other than our SourceError (an OpenCV error)."""

    def read(self) -> np.ndarray:
        if self._left > 0:
            return super().read()
        raise RuntimeError("driver exploded")


class FlakyDetector:
    """Test double: a detector whose first two calls fail (as an inference timeout would), then succeed."""

    ready = True

    def __init__(self) -> None:
        self.calls = 0

    def detect(self, rgb: np.ndarray) -> dict[str, Any]:
        self.calls += 1
        if self.calls <= 2:
            raise TimeoutError("inference took longer than 10 s")
        return {"detections": [], "timings_ms": {"invoke": 0.0}}


def test_unexpected_errors_in_the_source_or_the_detector_do_not_end_the_pipeline(
    run_pipeline: Callable[..., CameraPipeline],
) -> None:
    settings = CaptureSettings(source="/dev/video0", reconnect_min_s=5, reconnect_max_s=5)
    flaky = FlakyDetector()
    pipeline = run_pipeline(
        settings, flaky, source_opener=lambda _: BrokenDriverSource(frames=6, hang_s=0), stream_queue_size=2
    )
    wait_for(lambda: pipeline.status()["state"] == "reconnecting", 5, "the driver error")
    status = pipeline.status()
    assert "unexpected RuntimeError reading: driver exploded" in status["reason"]
    wait_for(lambda: accounted(pipeline.status()) == 6, 5, "all six frames to be accounted for")
    status = pipeline.status()
    assert status["detect_errors"] == 2 and status["frames_inferred"] >= 1


# -- motion gating ---------------------------------------------------------------------------------------------


def still_then_moving_video(path: Path, still: int, moving: int, fps: float) -> Path:
    sliding = list(moving_photo_frames(moving, photos=("chelsea",)))
    write_video(path, iter([sliding[0]] * still + sliding), fps)
    return path


def test_motion_gate_lets_changes_through_and_refreshes_a_still_scene() -> None:
    frames = list(moving_photo_frames(10, photos=("chelsea",)))
    gate = MotionGate(min_change=0.005, max_skip_s=1.0)
    assert gate.admit(frames[0], now=0.0)  # the first frame is the reference
    assert not gate.admit(frames[0].copy(), now=0.1) and gate.last_change == 0.0
    assert gate.admit(frames[3], now=0.2) and gate.last_change > 0.05  # the cat moved
    assert not gate.admit(frames[3], now=1.1)
    assert gate.admit(frames[3], now=1.25)  # max_skip_s since the last inference: refresh


def test_motion_gating_skips_still_frames_and_infers_moving_ones(
    tmp_path: Path, detector: Detector, run_pipeline: Callable[..., CameraPipeline]
) -> None:
    video = still_then_moving_video(tmp_path / "still.avi", still=20, moving=20, fps=20)
    results: list[FrameResult] = []
    settings = CaptureSettings(
        source=str(video), motion_min_change=0.005, reconnect_min_s=30, reconnect_max_s=30, buffer_frames=40
    )
    pipeline = run_pipeline(settings, detector, on_result=results.append)
    wait_for(lambda: pipeline.status()["frames_captured"] >= 40, 10, "the whole video")
    wait_for(lambda: accounted(pipeline.status()) == 40, 5, "the last frame")
    status = pipeline.status()
    assert status["motion_gating"] and status["frames_still"] >= 18
    assert len([r for r in results if r.frame_index < 20]) == 1  # the first still frame, then nothing moved
    assert len([r for r in results if r.frame_index >= 20]) >= 5
    assert all(max(r.detections, key=lambda d: d["score"])["label"] == "cat" for r in results)
