"""What decoding an image will cost in memory and in work, known before a single pixel is decoded.

A 1.6 KB lossless WebP of 8000x5000 or a 40 MP PNG of one colour is tiny on the wire and hundreds of MB once
decoded: the pixel limit alone (MAX_IMAGE_PIXELS) says nothing about memory, which depends on the format, the mode
and the decoder's own copies. `decode_cost` is an upper estimate of the peak a decode takes, from what the header
says (size, mode, format, progressive JPEG), for the decode path `preprocess` takes:

- JPEG: decoded by libjpeg at reduced scale (DCT scaling to about the model input), so the output is small; a
  progressive JPEG also keeps all its DCT coefficients at full resolution until the last scan (2 bytes per
  coefficient, three components).
- Any other format: Pillow decodes it whole, at its own storage size (4 bytes per pixel for RGB), then the image
  is reduced (box filter) before any conversion, so conversions cost little. Palette and bilevel images are
  converted first (Pillow cannot reduce them), 16-bit ones copied to an array first.
- Decoders' own copies: libwebp's canvas and the frame it returns (two more RGBA images; Pillow allocates the
  canvas when it *opens* the file, which is why the WebP size is read here, before Pillow sees it), a TIFF strip
  as large as the image, Pillow's pure-Python RLE buffer for BMP, GIF's previous frame.

Work: a decode cannot be interrupted, so the work that does not show in the size is bounded before it begins.
Every scan of a progressive JPEG is one more pass over all of the image's coefficients, and a scan can be 12
bytes: 40 000 of them (488 KB) held a worker for 16 s at 2 MP. Pillow handles each PNG chunk in Python while
holding the GIL: 1.7 million empty chunks (20 MiB) took seconds and stalled the event loop. So a JPEG may have
MAX_JPEG_SCANS scans and a PNG MAX_PNG_CHUNKS chunks, far above what any encoder writes.

The factors were measured (peak RSS of each kind of image decoded alone, tests/workloads/vision/
test_decode_budget.py) and err on the high side; the test fails if a real decode ever takes more than its estimate.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import struct

MIB = 1024 * 1024

PILLOW_BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}
"""How many bytes Pillow stores per pixel by mode; every other mode (RGB, RGBA, LA, CMYK, I, F...) takes 4."""

DECODER_COPIES = {"WEBP": 3.0, "TIFF": 1.0, "BMP": 1.0, "GIF": 0.0, "PNG": 0.0}
"""Extra full-size images a format's decoder holds while decoding, in units of the decoded image (WebP: 4 bytes
per pixel whatever the mode: libwebp's own buffer, the animation decoder's canvas, the frame handed to Pillow).
Measured: WebP 15.3 bytes per pixel in all; a TIFF of one strip 7 (a strip as large as the image)."""

CONVERT_BEFORE_REDUCE = {"P": 4, "PA": 4, "1": 1, "RGBA": 4, "LA": 4, "I;16": 5, "I;16L": 5, "I;16B": 5, "I;16N": 5}
"""Bytes per pixel of the copies a mode needs to be reduced: palette -> RGB(A) and bilevel -> L first (Pillow
cannot reduce them), a premultiplied copy for RGBA and LA (Pillow's reduce makes one), a 16-bit image as an array
and OpenCV's area resize of it (measured 3.7)."""

FIXED_BYTES = 8 * MIB
"""The reduced image, the model input, the decoder's working buffers: bounded, whatever the image size."""

MARGIN = 1.05
"""On top of every estimate: the allocator's rounding and what a measurement cannot see."""


MAX_JPEG_SCANS = 100
"""Scans a JPEG may have: libjpeg's progressive mode writes 10 (6 for grayscale), a baseline JPEG one per
component at most; djpeg's `-maxscans` is the same kind of guard."""

MAX_PNG_CHUNKS = 16_384
"""Chunks a PNG may have: encoders write their image data in chunks of 8 to 64 KB (libpng, Pillow), so a 20 MiB
upload has at most a few thousand; each chunk costs Pillow about 6 us of Python."""


def jpeg_scans(data: bytes) -> int:
    """How many scans (SOS markers) a JPEG has, at most. In entropy-coded data a 0xFF byte is always followed by 0x00
    or a restart marker, so FF DA appears only as a marker or inside a marker segment (an EXIF thumbnail's own
    scans): the count can be a little high, never low. One pass in C over the bytes."""
    return data.count(b"\xff\xda")


def png_chunks(data: bytes, stop_after: int) -> int:
    """How many chunks a PNG has, counting up to `stop_after` + 1 (a walk over the chunk lengths only)."""
    pos, count, end = 8, 0, len(data)
    while pos + 8 <= end and count <= stop_after:
        pos += struct.unpack_from(">I", data, pos)[0] + 12  # length, type, data, CRC
        count += 1
    return count


def webp_header(data: bytes) -> tuple[int, int, bool] | None:
    """(width, height, has alpha) of the canvas a WebP header declares (lossy VP8, lossless VP8L, extended VP8X),
    or None when `data` is not a WebP."""
    if len(data) < 30 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return None
    chunk = data[12:16]
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack_from("<HH", data, 26)
        return width & 0x3FFF, height & 0x3FFF, False
    if chunk == b"VP8X":
        alpha = bool(data[20] & 0x10)
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1, alpha
    if chunk == b"VP8L" and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, bool(bits >> 28 & 1)
    return None


def jpeg_cost(
    size: tuple[int, int], scale: int, *, progressive: bool, via_pillow: bool, sampling: list[tuple[int, int]]
) -> int:
    """Peak bytes of decoding a JPEG of `size` at 1/`scale` (OpenCV into RGB, or Pillow's draft for other modes).

    `sampling` is each component's (horizontal, vertical) sampling factor from the frame header (Pillow's
    `layer`): a progressive JPEG keeps 2 bytes per coefficient of every component until its last scan, full
    resolution for a component sampled at the maximum, a quarter for 4:2:0 chroma (measured: 118 MiB for a 40 MP
    4:2:0 colour photo, 308 MiB for 40 MP CMYK).
    """
    pixels = size[0] * size[1]
    out = math.ceil(size[0] / scale) * math.ceil(size[1] / scale)
    cost = out * (4 + 4 + 3 if via_pillow else 3)  # Pillow: decoded, converted to RGB, copied to an array
    if progressive:
        components = sampling or [(1, 1)] * 4
        h_max = max(h for h, _ in components) or 1
        v_max = max(v for _, v in components) or 1
        share = sum((h * v) / (h_max * v_max) for h, v in components)
        cost += int(pixels * share * 2)
    return int(cost * MARGIN) + FIXED_BYTES


def decode_cost(fmt: str, mode: str, size: tuple[int, int]) -> int:
    """Peak bytes of decoding a non-JPEG image of `size`, `mode` and `fmt` the way `preprocess` does."""
    pixels = size[0] * size[1]
    stored = PILLOW_BYTES_PER_PIXEL.get(mode, 4)
    copies = DECODER_COPIES.get(fmt, 1.0)
    decoder = copies * pixels * (4 if fmt == "WEBP" else stored)
    return int((pixels * stored + decoder + pixels * CONVERT_BEFORE_REDUCE.get(mode, 0)) * MARGIN) + FIXED_BYTES


def reduce_factor(size: tuple[int, int], input_size: tuple[int, int]) -> int:
    """The largest whole factor that still leaves both sides at least twice the model input (1: none)."""
    return max(1, min(size[0] // (2 * input_size[0]), size[1] // (2 * input_size[1])))


_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
_malloc_trim = getattr(_libc, "malloc_trim", None)


def give_back_memory() -> None:
    """Return the heap's free memory to the system (glibc's malloc_trim), after a large decode.

    glibc keeps freed memory below its trim threshold in the arena of the thread that freed it, so the RSS of a
    service that decoded a few large images stays at their peak for good (the issue saw 445 MB after the clients
    had gone). A trim takes a few milliseconds: worth it after a decode of tens of MB, not after a photo.
    """
    if _malloc_trim is not None:
        _malloc_trim(0)
