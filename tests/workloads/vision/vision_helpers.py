"""Helpers for the vision tests: real photos (scikit-image's bundled files), settings, a real uvicorn server."""

from __future__ import annotations

import io
import socket
import struct
import threading
import time
from pathlib import Path

import numpy as np
import skimage
import uvicorn
from fastapi import FastAPI
from korall_workloads.vision.settings import VisionSettings
from PIL import Image

ROOT = Path(__file__).resolve().parents[3]
MODELS = ROOT / "models"
SKIMAGE_DATA = Path(skimage.__file__).parent / "data"

# The photo, the COCO label it must yield, the minimum score we accept.
PHOTOS = {
    "chelsea": ("cat", 0.7),
    "coffee": ("cup", 0.7),
    "motorcycle_left": ("motorcycle", 0.8),
    "astronaut": ("person", 0.6),
}
EMPTY_SCENE = "grass"  # a lawn: nothing COCO-like (brick.png, by contrast, scores 0.84 as a "keyboard")


def photo_rgb(name: str) -> np.ndarray:
    return np.asarray(Image.open(SKIMAGE_DATA / f"{name}.png").convert("RGB"))


def encode(rgb: np.ndarray | Image.Image, fmt: str = "JPEG", **kw: object) -> bytes:
    im = rgb if isinstance(rgb, Image.Image) else Image.fromarray(rgb)
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def settings(**overrides: object) -> VisionSettings:
    # Room for the tests that queue dozens of requests at once; shedding past INFER_QUEUE_MAX has its own tests.
    base: dict[str, object] = {"models_dir": MODELS, "accelerator": "cpu", "num_threads": 1, "infer_queue_max": 64}
    base.update(overrides)
    return VisionSettings(**base)  # type: ignore[arg-type]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ThreadedServer:
    """A real uvicorn server (uvloop + httptools, as in production) on a loopback port, in a thread."""

    def __init__(self, app: FastAPI) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, loop="uvloop", http="httptools", log_level="warning"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name=f"uvicorn-{self.port}", daemon=True)

    def __enter__(self) -> ThreadedServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def with_extra_scans(jpeg: bytes, extra: int) -> bytes:
    """A progressive JPEG with its smallest refinement scan repeated `extra` times before the end marker: still a
    valid file (a refinement scan adds nothing the second time), and the cheap decode-time bomb a fuzzer found."""
    pos, scans = 2, []
    while jpeg[pos + 1] != 0xD9:
        marker, (length,) = jpeg[pos + 1], struct.unpack_from(">H", jpeg, pos + 2)
        end = pos + 2 + length
        if marker == 0xDA:  # the scan's entropy-coded data runs to the next marker (FF not followed by 00 or RSTn)
            while jpeg[end] != 0xFF or jpeg[end + 1] == 0 or 0xD0 <= jpeg[end + 1] <= 0xD7:
                end += 1
            scans.append(jpeg[pos:end])
        pos = end
    return jpeg[:pos] + min(scans[1:], key=len) * extra + jpeg[pos:]
