"""Decoding and preprocessing of every image layout a user may send, on real Pillow-encoded files."""

from __future__ import annotations

import io
import struct
import warnings
import zlib

import numpy as np
import pytest
from korall_workloads.common.responses import http_status
from korall_workloads.vision.decode_cost import MAX_JPEG_SCANS, MAX_PNG_CHUNKS
from korall_workloads.vision.preprocess import ImageError, prepare_array, prepare_image, resize_rgb
from PIL import Image, ImageOps
from vision_helpers import encode, photo_rgb, with_extra_scans

SIZE = (300, 300)
BIG = 10**8


def _prep(data: bytes, max_pixels: int = BIG):
    return prepare_image(data, SIZE, max_pixels)


def test_rgb_jpeg_is_resized_to_the_model_input_and_keeps_its_size() -> None:
    p = _prep(encode(photo_rgb("chelsea")))
    assert p.tensor.shape == (300, 300, 3) and p.tensor.dtype == np.uint8
    assert (p.width, p.height, p.format) == (451, 300, "JPEG")


@pytest.mark.parametrize(
    ("mode", "fmt", "colour", "expected"),
    [
        ("L", "PNG", 200, (200, 200, 200)),
        ("1", "PNG", 1, (255, 255, 255)),
        ("LA", "PNG", (100, 255), (100, 100, 100)),
        ("LA", "PNG", (0, 0), (255, 255, 255)),  # fully transparent: composited over white
        ("RGBA", "PNG", (10, 20, 30, 255), (10, 20, 30)),
        ("RGBA", "PNG", (10, 20, 30, 0), (255, 255, 255)),
        ("CMYK", "JPEG", (0, 255, 255, 0), (255, 0, 0)),
        ("CMYK", "TIFF", (0, 0, 0, 255), (0, 0, 0)),
        ("RGB", "BMP", (1, 2, 3), (1, 2, 3)),
        ("RGB", "WEBP", (0, 0, 255), (0, 0, 255)),
    ],
)
def test_every_layout_becomes_rgb(mode: str, fmt: str, colour: object, expected: tuple[int, int, int]) -> None:
    data = encode(Image.new(mode, (64, 48), colour), fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    p = _prep(data)
    centre = p.tensor[150, 150].astype(int)
    tolerance = 6 if fmt == "JPEG" else 1
    assert np.abs(centre - np.array(expected)).max() <= tolerance, (mode, fmt, centre)
    assert (p.width, p.height) == (64, 48)


def test_palette_png_with_transparency() -> None:
    im = Image.new("P", (20, 20), 1)
    im.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    im.info["transparency"] = 0
    assert tuple(_prep(encode(im, "PNG")).tensor[10, 10]) == (255, 0, 0)
    im.paste(0, (0, 0, 20, 20))  # all pixels now the transparent index
    assert tuple(_prep(encode(im, "PNG", transparency=0)).tensor[10, 10]) == (255, 255, 255)


def test_16_bit_grayscale_is_rescaled_not_clipped() -> None:
    arr = np.full((32, 32), 32768, np.uint16)
    im = Image.fromarray(arr)
    p = _prep(encode(im, "PNG"))
    assert tuple(p.tensor[150, 150]) == (128, 128, 128)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (np.full((32, 32), 0.5, np.float32), 127),  # float 0..1: scaled, not clipped to black
        (np.full((32, 32), 200.0, np.float32), 200),  # float 0..255: as it is
        (np.full((32, 32), np.nan, np.float32), 0),  # NaN: black, not an undefined cast
        (np.full((32, 32), 3 << 24, np.int32), 192),  # 32-bit: shifted, not wrapped modulo 256
        (np.full((32, 32), 40000, np.int32), 156),  # 16-bit data in a 32-bit image
    ],
)
def test_float_and_32_bit_tiffs_are_rescaled(values: np.ndarray, expected: int) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a NaN cast warns ("invalid value encountered in cast")
        pixel = _prep(encode(Image.fromarray(values), "TIFF")).tensor[150, 150]
    assert tuple(pixel) == (expected,) * 3


def test_gif_first_frame() -> None:
    frames = [Image.new("RGB", (16, 16), (255, 0, 0)), Image.new("RGB", (16, 16), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert tuple(_prep(data).tensor[0, 0]) == (255, 0, 0)


def test_exif_orientation_rotates_and_swaps_the_reported_size() -> None:
    im = Image.new("RGB", (400, 200), (0, 0, 0))
    im.paste((255, 0, 0), (0, 0, 100, 200))  # red stripe on the left of the stored image
    exif = Image.Exif()
    exif[0x0112] = 6  # the camera was turned: display = stored rotated 90 degrees clockwise
    p = _prep(encode(im, "JPEG", exif=exif.tobytes(), quality=95))
    assert (p.width, p.height) == (200, 400)
    top, bottom = p.tensor[10, 150].astype(int), p.tensor[290, 150].astype(int)
    assert top[0] > 200 and top[1] < 60  # the stripe is now at the top
    assert bottom[0] < 60


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_matches_pillows_exif_transpose(orientation: int) -> None:
    stored = np.zeros((60, 90, 3), np.uint8)
    stored[:20, :30], stored[40:, 60:], stored[:20, 60:] = (255, 0, 0), (0, 255, 0), (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(Image.fromarray(stored), "PNG", exif=exif.tobytes())
    p = _prep(data)
    reference = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    assert (p.width, p.height) == reference.size
    expected = np.asarray(reference.resize(SIZE, Image.Resampling.NEAREST)).astype(int)
    assert np.abs(p.tensor.astype(int) - expected).mean() < 3  # only interpolation at the colour edges differs


def test_large_jpeg_decodes_at_reduced_size() -> None:
    big = np.asarray(Image.fromarray(photo_rgb("chelsea")).resize((2400, 1600)))
    p = _prep(encode(big))
    assert (p.width, p.height) == (2400, 1600)  # reported as sent ...
    # ... but libjpeg's DCT scaling did the shrinking: decoding a 2400x1600 JPEG in full takes several times longer
    full = Image.open(io.BytesIO(encode(big)))
    full.draft("RGB", (240, 240))
    assert full.size == (600, 400)


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"hello, this is text", 422),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, 422),
        (b"GIF89a", 422),
    ],
)
def test_non_images_are_rejected(data: bytes, status: int) -> None:
    with pytest.raises(ImageError) as err:
        _prep(data)
    assert http_status(err.value) == status


def test_truncated_jpeg_is_rejected() -> None:
    data = encode(photo_rgb("coffee"))
    with pytest.raises(ImageError) as err:
        _prep(data[: len(data) // 2])
    assert http_status(err.value) == 422 and "truncated" in err.value.message


def test_pixel_limit_is_checked_before_decoding() -> None:
    data = encode(Image.new("L", (2000, 2000)), "PNG")
    with pytest.raises(ImageError) as err:
        _prep(data, max_pixels=1_000_000)
    assert (http_status(err.value), err.value.code) == (413, "image_too_large")
    assert "2000x2000" in err.value.message


def test_camera_frames_any_size() -> None:
    frame = photo_rgb("astronaut")
    assert prepare_array(frame, SIZE).shape == (300, 300, 3)
    same = np.zeros((300, 300, 3), np.uint8)
    assert prepare_array(same, SIZE).shape == (300, 300, 3)
    with pytest.raises(ValueError):
        prepare_array(np.zeros((10, 10), np.uint8), SIZE)


@pytest.mark.parametrize(("size", "mode"), [((640, 480), "RGB"), ((2400, 1600), "L"), ((301, 299), "RGB")])
def test_jpeg_pixels_match_pillows_draft_decode(size: tuple[int, int], mode: str) -> None:
    """Complete JPEGs take OpenCV's decoder: its pixels must be those of Pillow's draft decode at the same scale."""
    data = encode(np.asarray(Image.fromarray(photo_rgb("chelsea")).convert(mode).resize(size)))
    reference = Image.open(io.BytesIO(data))
    reference.draft("RGB", (240, 240))
    expected = resize_rgb(np.asarray(reference.convert("RGB")), SIZE)
    p = _prep(data)
    assert (p.width, p.height) == size
    assert np.array_equal(p.tensor, expected)
    # trailing bytes after the end marker: Pillow decodes it instead, to the same pixels
    assert np.array_equal(_prep(data + b"\x00trailer").tensor, expected)


def test_a_jpeg_of_more_scans_than_any_encoder_writes_is_refused_before_decoding() -> None:
    """40 000 scans of 12 bytes held a worker for 16 s at 2 MP (a decode cannot be interrupted)."""
    progressive = encode(photo_rgb("chelsea"), "JPEG", progressive=True)
    assert _prep(progressive).format == "JPEG"  # libjpeg's 10 scans are fine
    bomb = with_extra_scans(progressive, MAX_JPEG_SCANS)
    assert Image.open(io.BytesIO(bomb)).load() is not None  # Pillow decodes it: a valid file, only slow
    with pytest.raises(ImageError) as err:
        _prep(bomb)
    assert http_status(err.value) == 413 and f"over the limit of {MAX_JPEG_SCANS}" in str(err.value)


def test_a_png_of_more_chunks_than_any_encoder_writes_is_refused_before_pillow_reads_them() -> None:
    """1.7 million empty chunks took Pillow seconds of Python, with the GIL held."""
    png = encode(photo_rgb("chelsea"), "PNG")
    assert _prep(png).format == "PNG"
    empty = struct.pack(">I", 0) + b"teXt" + struct.pack(">I", zlib.crc32(b"teXt"))
    iend = png.rindex(b"IEND") - 4
    bomb = png[:iend] + empty * MAX_PNG_CHUNKS + png[iend:]
    with pytest.raises(ImageError) as err:
        _prep(bomb)
    assert http_status(err.value) == 413 and f"over {MAX_PNG_CHUNKS} chunks" in str(err.value)
