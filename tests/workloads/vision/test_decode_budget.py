"""The decode cost estimate (vision/decode_cost.py) is an upper bound of what decoding really takes.

Each kind of image that costs much more decoded than on the wire (lossless WebP, RGBA / 16-bit / palette PNG,
progressive JPEG, a TIFF of one strip, GIF, RLE BMP) is decoded in a process of its own, forked from one that has
imported everything already, and its peak RSS growth (VmHWM after resetting it through /proc/self/clear_refs) is
compared with the estimate made from its header. If a library update makes a decoder hungrier, this fails before a
pod is OOM-killed.

The child first reads one byte of every page of the files it has mapped (the libraries' code), so that what its
RSS grows by during the decode is what the decode allocates. Without that, the first touch of a decoder's code
counted too, and how much of a library one fault maps depends on the kernel's page cache: a fresh virtualenv mapped
4 to 15 MiB more than one whose libraries had long been read, and failed this test.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from korall_workloads.vision.decode_cost import MIB
from PIL import Image
from vision_helpers import ROOT

W, H = 3000, 2000  # 6 MP: large enough that the decoders' own buffers dominate the fixed part of the estimate

MEASURE = """
import ctypes, json, os, sys
from pathlib import Path
from korall_workloads.vision.preprocess import decode_image, open_image

def status(key):
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(key))
    return int(line.split()[1]) * 1024

def map_every_file_page():
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[1].startswith("r") and fields[5].startswith("/"):
            start, end = (int(x, 16) for x in fields[0].split("-"))
            for address in range(start, end, 4096):
                ctypes.c_char.from_address(address).value

decode_image(open_image(Path(sys.argv[1]).read_bytes(), (300, 300), 40_000_000), (300, 300))  # warm the libraries
for path in sys.argv[1:]:
    data = Path(path).read_bytes()
    pid = os.fork()
    if pid == 0:
        map_every_file_page()
        Path("/proc/self/clear_refs").write_text("5")
        base = status("VmRSS:")
        opened = open_image(data, (300, 300), 40_000_000)
        decode_image(opened, (300, 300))
        print(json.dumps({"file": Path(path).name, "peak": status("VmHWM:") - base, "estimate": opened.cost_bytes}))
        sys.stdout.flush()
        os._exit(0)
    os.waitpid(pid, 0)
"""


def _rle8_bmp(path: Path) -> None:
    """A BMP with RLE8 compression (Pillow cannot write one): runs of 255 pixels, a few hundred KB for 6 MP."""
    row = b"".join(bytes([min(255, W - x), 5]) for x in range(0, W, 255)) + b"\x00\x00"
    pixels = row * H + b"\x00\x01"
    palette = b"".join(bytes([i, i, 255 - i, 0]) for i in range(256))
    offset = 14 + 40 + len(palette)
    info = struct.pack("<IiiHHIIiiII", 40, W, H, 1, 8, 1, len(pixels), 2835, 2835, 256, 0)
    path.write_bytes(b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset) + info + palette + pixels)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("costly")
    rgb = Image.new("RGB", (W, H), (120, 30, 200))
    rgba = Image.new("RGBA", (W, H), (120, 30, 200, 100))
    made = {
        "webp-lossless-rgb.webp": (rgb, "WEBP", {"lossless": True}),
        "webp-lossless-rgba.webp": (rgba, "WEBP", {"lossless": True}),
        "rgba.png": (rgba, "PNG", {"compress_level": 1}),
        "rgb.png": (rgb, "PNG", {"compress_level": 1}),
        "gray16.png": (Image.new("I;16", (W, H), 1234), "PNG", {"compress_level": 1}),
        "palette.png": (rgb.quantize(16), "PNG", {"compress_level": 1}),
        "progressive.jpg": (rgb, "JPEG", {"quality": 80, "progressive": True}),
        "progressive-cmyk.jpg": (rgb.convert("CMYK"), "JPEG", {"quality": 80, "progressive": True}),
        "one-strip.tif": (rgb, "TIFF", {"compression": "tiff_deflate", "strip_size": 1 << 30}),
        "frame.gif": (rgb.quantize(16), "GIF", {}),
    }
    paths = []
    for name, (im, fmt, options) in made.items():
        im.save(folder / name, fmt, **options)
        paths.append(folder / name)
    _rle8_bmp(folder / "rle8.bmp")
    return [*paths, folder / "rle8.bmp"]


def test_no_decode_takes_more_memory_than_its_estimate(images: list[Path]) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(ROOT / d) for d in ("contract", "workloads"))}
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, *map(str, images)], env=env, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["file"] for r in results] == [p.name for p in images]
    over = [r for r in results if r["peak"] > r["estimate"]]
    table = "\n".join(
        f"{r['file']:<26} peak {r['peak'] / MIB:6.1f} MiB  estimate {r['estimate'] / MIB:6.1f} MiB" for r in results
    )
    assert not over, f"decodes over their estimate:\n{table}"
    # and the estimates are not so generous that the budget refuses what would fit twice over
    assert all(r["estimate"] < 3 * r["peak"] + 8 * MIB for r in results), table
