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
_EXIF_ORIENTATION = 0x0112


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
            arr = np.clip(arr, 0.0, 255.0)
        elif mode == "I":
            # Pillow opens 16-bit grayscale as "I" for some formats; treat values above 255 as 16-bit data.
            arr = np.right_shift(arr, 8) if arr.max(initial=0) > 255 else np.clip(arr, 0, 255)
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


def prepare_image(data: bytes, input_size: tuple[int, int], max_pixels: int) -> PreparedImage:
    """Decode `data` and return the model input at `input_size` (width, height), or raise ImageError."""
    t0 = time.perf_counter()
    try:
        im = Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS)
        width, height = im.size
        if width <= 0 or height <= 0:
            raise InvalidImage(f"image has no pixels ({width}x{height})")
        if width * height > max_pixels:
            raise ImageTooLarge(
                f"image is {width}x{height} = {width * height} pixels, over the limit of {max_pixels} "
                "(MAX_IMAGE_PIXELS)"
            )
        fmt = im.format or "unknown"
        orientation = 1
        if fmt in ("JPEG", "MPO", "PNG", "WEBP", "TIFF"):
            orientation = int(im.getexif().get(_EXIF_ORIENTATION, 1) or 1)
        rgb: np.ndarray | None = None
        if fmt in ("JPEG", "MPO"):
            scale = jpeg_scale((width, height), input_size)
            if im.mode in ("RGB", "L"):
                rgb = _decode_jpeg_cv2(data, scale, (width, height))
            if rgb is None:
                w_in, h_in = input_size
                im.draft("RGB", (max(1, int(w_in * DRAFT_MIN_FRACTION)), max(1, int(h_in * DRAFT_MIN_FRACTION))))
        if rgb is None:
            im.load()
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(str(exc)) from exc
    except UnidentifiedImageError as exc:
        raise InvalidImage(f"not a supported image; send one of {', '.join(SUPPORTED_FORMATS)}") from exc
    except MemoryError as exc:
        raise ImageTooLarge("image too large to decode") from exc
    except Exception as exc:  # Pillow's decoders raise OSError, SyntaxError, ValueError, struct.error, EOFError...
        raise InvalidImage(f"corrupt or truncated image: {exc}") from exc
    t1 = time.perf_counter()

    if rgb is None:
        try:
            rgb = np.asarray(_to_rgb(im))
        except Exception as exc:
            raise InvalidImage(f"cannot convert a {im.mode} image to RGB: {exc}") from exc
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
        decode_ms=(t1 - t0) * 1000.0,
        preprocess_ms=(t2 - t1) * 1000.0,
    )


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
