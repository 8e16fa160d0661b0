"""Credentials never shown: the redaction of camera sources and the log filter under every log line."""

from __future__ import annotations

import logging

import pytest
from korall_workloads.common.redact import SecretFilter, redact_text, redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("rtsp://user:pa@ss@cam.local:554/stream", "rtsp://***@cam.local:554/stream"),  # the @ in the password
        ("rtsp://user:pa/ss@cam/stream", "rtsp://***@cam/stream"),  # a / in it
        ("http://cam/video.mjpg?user=admin&pwd=hunter2", "http://cam/video.mjpg?user=***&pwd=***"),
        ("http://admin:x@cam/v?token=abc#secret", "http://***@cam/v?token=***#***"),
        ("rtsp://cam.local:8554/stream", "rtsp://cam.local:8554/stream"),
        ("http://cam/v.mjpg?raw", "http://cam/v.mjpg?raw"),
    ],
)
def test_urls_are_shown_without_credentials(url: str, shown: str) -> None:
    assert redact_url(url) == shown == redact_text(url)


@pytest.mark.parametrize("source", ["/dev/video0", "0", "demo.avi", "/data/cam 1.mp4"])
def test_devices_and_files_are_shown_as_they_are(source: str) -> None:
    assert redact_text(source) == source


def test_a_gstreamer_pipeline_loses_its_url_credentials_and_password_properties() -> None:
    pipeline = "rtspsrc location=rtsp://cam:secret1@10.0.0.5/s user-id=admin user-pw=hunter2 latency=0 ! decodebin"
    shown = redact_text(pipeline)
    assert "secret1" not in shown and "hunter2" not in shown and "admin" not in shown
    assert shown.startswith("rtspsrc location=rtsp://***@10.0.0.5/s") and "latency=0 ! decodebin" in shown


def test_the_log_filter_hides_the_source_and_the_password_everywhere_in_a_record() -> None:
    source = "http://admin:pa@ss@cam/v.mjpg?pwd=hunter2"
    secret_filter = SecretFilter(sources=[source, "demo.avi"], passwords=["mqtt-pass-42"])
    try:
        raise RuntimeError(f"cannot open {source}")
    except RuntimeError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "open %s with %s", (source, "mqtt-pass-42"), None)
        import sys

        record.exc_info = sys.exc_info()
    record.detail = f"source={source}"
    assert secret_filter.filter(record)
    text = logging.Formatter().format(record) + record.detail
    assert "hunter2" not in text and "pa@ss" not in text and "mqtt-pass-42" not in text
    assert "http://***@cam/v.mjpg?pwd=***" in text and "RuntimeError: cannot open http://***@cam" in text
    plain = logging.LogRecord("x", logging.INFO, __file__, 1, "replaying demo.avi", (), None)
    secret_filter.filter(plain)
    assert plain.getMessage() == "replaying demo.avi"  # a file is no secret
