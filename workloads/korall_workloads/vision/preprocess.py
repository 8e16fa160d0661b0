"""Bytes in, the model's input tensor out: decode, guard, orient, convert and resize any image a user may send.

Cheap where it counts: the pixel count is checked from the header before anything is decoded (decompression
bombs), JPEGs are decoded with libjpeg's DCT scaling at the smallest size still close to the model input
(the scale `Image.draft` would pick), and the image is resized straight to the input size (OpenCV: a tenth of
Pillow's time). Since the input is square, EXIF rotation is applied to the small result, not the full image.
Every failure becomes an `ImageError`: `InvalidImage`, or `ImageTooLarge` past the pixel limit.

Pillow reads every header (format, size, mode, EXIF). A complete colour or grayscale JPEG is then decoded by
OpenCV straight into a numpy array (the same libjpeg-turbo pixels, 0.15-0.2 ms sooner per 640x480 photo than
Pillow's chunked decoder and its copy out); anything else, including a JPEG without its end marker, which
OpenCV would pad with grey instead of refusing as truncated, is decoded by Pillow.
"""

from __future__ import annotations

import io
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import (  # noqa: F401  (importing a plugin registers its format; Image.open(formats=...) needs them)
    BmpImagePlugin,
    GifImagePlugin,
    Image,
    ImageFile,
    JpegImagePlugin,
    PngImagePlugin,
    TiffImagePlugin,
    UnidentifiedImageError,
    WebPImagePlugin,
)

from korall_workloads.common.errors import InvalidInput, ServiceError, TooLarge

from .decode_cost import (
    MAX_JPEG_SCANS,
    MAX_PNG_CHUNKS,
    MIB,
    decode_cost,
    jpeg_cost,
    jpeg_scans,
    png_chunks,
    reduce_factor,
    webp_header,
)

SUPPORTED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")
"""What Pillow may parse (JPEG includes multi-picture MPO); any other format is rejected before its parser runs."""

DRAFT_MIN_FRACTION = 0.8
"""JPEG DCT scaling may shrink each side down to this fraction of the model input (640x480 decodes as 320x240)."""

# EXIF orientation -> how to turn the stored pixels upright, on an [H, W, C] array (orientation 1: as stored).
_ORIENTATION: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.rot90(a, 2).transpose(1, 0, 2),
    8: lambda a: np.rot90(a, 1),
}
_SWAPS_AXES = {5, 6, 7, 8}
_EXIF_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "TIFF"})
_EXIF_ORIENTATION = 0x0112
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class ImageError(ServiceError):
    """An upload that is not an image we can use (one of the two kinds below)."""


class InvalidImage(ImageError, InvalidInput):
    """Not a supported image, or corrupt, truncated, or without pixels."""

    code = "invalid_image"


class ImageTooLarge(ImageError, TooLarge):
    """More pixels than MAX_IMAGE_PIXELS (read from the header, before decoding), or too large to decode."""

    code = "image_too_large"


@dataclass(frozen=True)
class PreparedImage:
    """The model input for one image and what the response reports about it."""

    tensor: np.ndarray  # [H, W, 3] uint8 at the model's input size
    width: int  # of the image as the user sees it (after EXIF orientation)
    height: int
    format: str
    decode_ms: float
    preprocess_ms: float


def _to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB; alpha is composited over white, 16/32-bit and float data are rescaled."""
    mode = im.mode
    if mode == "RGB":
        return im
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        arr = np.asarray(im)
        if mode == "F":
            # Float data: 0..1 (the usual scientific convention) is scaled to 0..255, anything larger is taken as
            # 0..255 already; NaN is black and infinities are clipped.
            arr = np.nan_to_num(arr, nan=0.0, posinf=255.0, neginf=0.0)
            arr = np.clip(arr * 255.0 if arr.max(initial=0.0) <= 1.0 else arr, 0.0, 255.0)
        elif mode == "I":
            # 32-bit integers: Pillow opens 16-bit grayscale as "I" for some formats. 8-bit values stay, 16-bit
            # ones are shifted by 8, and wider ones by as many bits as the largest needs beyond 8 (they wrapped).
            top = int(arr.max(initial=0))
            shift = 0 if top <= 255 else 8 if top <= 65535 else top.bit_length() - 8
            arr = np.right_shift(np.clip(arr, 0, None), shift)
        else:
            arr = np.right_shift(arr.astype(np.uint16), 8)
        return Image.fromarray(arr.astype(np.uint8), "L").convert("RGB")
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode in ("LA", "La", "PA", "RGBa", "RGBA"):
        im = im.convert("RGBA")
    if im.mode == "RGBA":
        white = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, im).convert("RGB")
    return im.convert("RGB")  # L, 1, CMYK, YCbCr, RGBX, ...


@dataclass
class OpenedImage:
    """An image whose header has been read and whose decode cost is known (`open_image`); `decode_image` decodes it."""

    image: Image.Image
    data: bytes
    format: str
    size: tuple[int, int]  # as stored, before EXIF orientation
    cost_bytes: int  # the estimated peak memory of decoding it (decode_cost)
    jpeg_scale: int  # DCT scaling denominator of a JPEG (1 for other formats)
    started: float  # perf_counter at open: decode_ms counts from here


def open_image(
    data: bytes, input_size: tuple[int, int], max_pixels: int, budget_bytes: int | None = None
) -> OpenedImage:
    """Read the header of `data`: size, format, orientation and what decoding it will cost; nothing is decoded.

    Raises ImageTooLarge past `max_pixels` or when the decode would take more than `budget_bytes`, InvalidImage for
    anything that is not a supported image.
    """
    t0 = time.perf_counter()
    try:
        if (webp := webp_header(data)) is not None:  # Pillow allocates a WebP's canvas when it opens it
            declared, mode = webp[:2], "RGBA" if webp[2] else "RGB"
            _check_size(declared, "WEBP", mode, decode_cost("WEBP", mode, declared), max_pixels, budget_bytes)
        if data.startswith(PNG_SIGNATURE) and (chunks := png_chunks(data, MAX_PNG_CHUNKS)) > MAX_PNG_CHUNKS:
            raise ImageTooLarge(  # before Pillow opens it: it reads the chunks before the image data in Python
                f"this PNG has over {MAX_PNG_CHUNKS} chunks ({chunks} counted): too much work to decode; re-encode it"
            )
        im = Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS)
        size = im.size
        fmt = im.format or "unknown"
        scale = 1
        if fmt in ("JPEG", "MPO"):
            if (scans := jpeg_scans(data)) > MAX_JPEG_SCANS:
                raise ImageTooLarge(
                    f"this JPEG has {scans} scans, over the limit of {MAX_JPEG_SCANS} (each scan is one more pass "
                    "over the whole image); re-encode it"
                )
            scale = jpeg_scale(size, input_size)
            progressive = bool(im.info.get("progressive") or im.info.get("progression"))
            sampling = [(int(h), int(v)) for _, h, v, _ in getattr(im, "layer", [])]
            via_pillow = im.mode not in ("RGB", "L")
            cost = jpeg_cost(size, scale, progressive=progressive, via_pillow=via_pillow, sampling=sampling)
        else:
            cost = decode_cost(fmt, im.mode, size)
        _check_size(size, fmt, im.mode, cost, max_pixels, budget_bytes)
    except Exception as exc:
        raise _image_error(exc) from exc
    return OpenedImage(im, data, fmt, size, cost, scale, t0)


def _check_size(
    size: tuple[int, int], fmt: str, mode: str, cost: int, max_pixels: int, budget_bytes: int | None
) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise InvalidImage(f"image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"image is {width}x{height} = {width * height} pixels, over the limit of {max_pixels} (MAX_IMAGE_PIXELS)"
        )
    if budget_bytes is not None and cost > budget_bytes:
        raise ImageTooLarge(
            f"decoding this {width}x{height} {fmt} ({mode}) image would take about {cost / MIB:.0f} MiB, over the "
            f"decode budget of {budget_bytes / MIB:.0f} MiB (DECODE_BUDGET_BYTES); send it smaller or as a JPEG"
        )


def _image_error(exc: Exception) -> ImageError:
    if isinstance(exc, ImageError):
        return exc
    if isinstance(exc, Image.DecompressionBombError):
        return ImageTooLarge(str(exc))
    if isinstance(exc, UnidentifiedImageError):
        return InvalidImage(f"not a supported image; send one of {', '.join(SUPPORTED_FORMATS)}")
    if isinstance(exc, MemoryError):
        return ImageTooLarge("image too large to decode")
    # Pillow's decoders raise OSError, SyntaxError, ValueError, struct.error, EOFError...
    return InvalidImage(f"corrupt or truncated image: {exc}")


def prepare_image(
    data: bytes, input_size: tuple[int, int], max_pixels: int, budget_bytes: int | None = None
) -> PreparedImage:
    """Decode `data` and return the model input at `input_size` (width, height), or raise ImageError."""
    return decode_image(open_image(data, input_size, max_pixels, budget_bytes), input_size)


def decode_image(opened: OpenedImage, input_size: tuple[int, int]) -> PreparedImage:
    """Decode an opened image into the model input at `input_size` (width, height), or raise ImageError."""
    im, fmt = opened.image, opened.format
    width, height = opened.size
    rgb: np.ndarray | None = None
    try:
        # Read here, not in open_image: Pillow's PNG reader decodes the whole image to look for EXIF (it may come
        # after the pixels), which must happen where the decode is budgeted and serialized.
        orientation = int(im.getexif().get(_EXIF_ORIENTATION, 1) or 1) if fmt in _EXIF_FORMATS else 1
        if fmt in ("JPEG", "MPO"):
            if im.mode in ("RGB", "L"):
                rgb = _decode_jpeg_cv2(opened.data, opened.jpeg_scale, opened.size)
            if rgb is None:
                w_in, h_in = input_size
                im.draft("RGB", (max(1, int(w_in * DRAFT_MIN_FRACTION)), max(1, int(h_in * DRAFT_MIN_FRACTION))))
        if rgb is None:
            im.load()
            im = _reduced(im, reduce_factor(im.size, input_size))  # a JPEG's draft is reduced already
    except Exception as exc:
        raise _image_error(exc) from exc
    t1 = time.perf_counter()

    if rgb is None:
        try:
            rgb = np.asarray(_to_rgb(im))
        except Exception as exc:
            raise InvalidImage(f"cannot convert a {im.mode} image to RGB: {exc}") from exc
        finally:
            im.close()
            opened.image.close()  # the full-size pixels go now, not when the request ends
    tensor = resize_rgb(rgb, input_size)
    upright = _ORIENTATION.get(orientation)
    if upright is not None:
        tensor = np.ascontiguousarray(upright(tensor))
        if orientation in _SWAPS_AXES:
            width, height = height, width
    t2 = time.perf_counter()
    return PreparedImage(
        tensor=tensor,
        width=width,
        height=height,
        format=fmt,
        decode_ms=(t1 - opened.started) * 1000.0,
        preprocess_ms=(t2 - t1) * 1000.0,
    )


_REDUCIBLE = frozenset({"L", "LA", "La", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "I", "F"})


def _reduced(im: Image.Image, factor: int) -> Image.Image:
    """A large decoded image shrunk by a whole `factor` (box filter) before any conversion, so that converting it
    to RGB costs little; modes Pillow cannot reduce are copied into one it can first (counted in decode_cost)."""
    if factor < 2:
        return im
    if im.mode in ("P", "PA"):
        im = im.convert("RGBA" if im.mode == "PA" or "transparency" in im.info else "RGB")
    elif im.mode == "1":
        im = im.convert("L")
    elif im.mode.startswith("I;16"):
        arr = np.asarray(im)
        small = cv2.resize(arr, (im.width // factor, im.height // factor), interpolation=cv2.INTER_AREA)
        return Image.fromarray(small)
    return im.reduce(factor) if im.mode in _REDUCIBLE else im


def jpeg_scale(size: tuple[int, int], input_size: tuple[int, int]) -> int:
    """The DCT scaling denominator (1, 2, 4 or 8) that `Image.draft` picks for a JPEG of `size` (width, height):
    the largest that keeps both sides at least DRAFT_MIN_FRACTION of the model input."""
    wanted = (max(1, int(input_size[0] * DRAFT_MIN_FRACTION)), max(1, int(input_size[1] * DRAFT_MIN_FRACTION)))
    most = min(size[0] // wanted[0], size[1] // wanted[1])
    return next(m for m in (8, 4, 2, 1) if most >= m or m == 1)


# OpenCV decode flags per DCT scale: RGB output (libjpeg converts while decoding), EXIF orientation left to us.
_CV2_JPEG_FLAGS = {
    scale: (reduced & ~cv2.IMREAD_COLOR) | cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION
    for scale, reduced in (
        (1, cv2.IMREAD_COLOR),
        (2, cv2.IMREAD_REDUCED_COLOR_2),
        (4, cv2.IMREAD_REDUCED_COLOR_4),
        (8, cv2.IMREAD_REDUCED_COLOR_8),
    )
}


def _decode_jpeg_cv2(data: bytes, scale: int, size: tuple[int, int]) -> np.ndarray | None:
    """A complete JPEG decoded by OpenCV at 1/scale as an [H, W, 3] RGB array (EXIF orientation not applied),
    or None when Pillow should decode it instead."""
    if not data.endswith(b"\xff\xd9"):
        return None  # no end marker: truncated (or trailing data); Pillow tells which, and refuses a truncated one
    try:
        rgb = cv2.imdecode(np.frombuffer(data, np.uint8), _CV2_JPEG_FLAGS[scale])
    except cv2.error:
        return None
    expected = (-(-size[1] // scale), -(-size[0] // scale), 3)
    return rgb if rgb is not None and rgb.shape == expected else None


def resize_rgb(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an [H, W, 3] uint8 array to `size` (width, height) with OpenCV, several times faster than Pillow.

    Bilinear when the image shrinks by at most 2x (the usual case after JPEG draft decoding), area averaging
    beyond that, so that large PNGs are not aliased.
    """
    height, width = rgb.shape[:2]
    if (width, height) == size:
        return np.ascontiguousarray(rgb)
    shrink = max(width / size[0], height / size[1])
    interpolation = cv2.INTER_AREA if shrink > 2.0 else cv2.INTER_LINEAR
    return cv2.resize(rgb, size, interpolation=interpolation)


def prepare_array(rgb: np.ndarray, input_size: tuple[int, int]) -> np.ndarray:
    """A camera frame ([H, W, 3] uint8 RGB, any size) resized to the model input."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an [H, W, 3] uint8 RGB array, got {rgb.shape} {rgb.dtype}")
    return resize_rgb(rgb, input_size)


# OpenCV's own thread pool would only add hand-overs to other threads for these small resizes (and compete with the
# interpreter for the cores): one thread, the caller's.
cv2.setNumThreads(1)

# Truncated images are errors, never silently padded. Pillow's own bomb warning is noise: the pixel limit above
# is checked first (its hard DecompressionBombError, at twice Image.MAX_IMAGE_PIXELS, still maps to 413).
ImageFile.LOAD_TRUNCATED_IMAGES = False
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
