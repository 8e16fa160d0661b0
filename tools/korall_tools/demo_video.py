"""A small demo video that stands in for a camera: real photos moving across a real background.

    python -m korall_tools.demo_video demo.avi
    CAPTURE_SOURCE=demo.avi CAPTURE_LOOP=true make run

The photos come from scikit-image's bundled data (the cat `chelsea`, `motorcycle_left`, `astronaut`) over
its `brick` texture, so detections are real and checkable; scikit-image is a development dependency, which
is why this is a generator and not a committed binary. MJPG in an .avi is the container every OpenCV build
can write and read back.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np

DEFAULT_PHOTOS = ("chelsea", "motorcycle_left")


def skimage_photo(name: str) -> np.ndarray:
    """A photo from skimage/data as BGR (needs the dev extra: scikit-image)."""
    try:
        import skimage.data
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise SystemExit("the demo video needs scikit-image (pip install -e '.[dev]')") from exc
    path = os.path.join(os.path.dirname(skimage.data.__file__), f"{name}.png")
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"no photo {name!r} in {os.path.dirname(path)}")
    return image


def background(width: int, height: int) -> np.ndarray:
    brick = skimage_photo("brick")
    return cv2.resize(brick, (width, height), interpolation=cv2.INTER_AREA)


def moving_photo_frames(
    count: int,
    *,
    width: int = 640,
    height: int = 480,
    photos: Sequence[str] = DEFAULT_PHOTOS,
    photo_height_ratio: float = 0.8,
) -> Iterator[np.ndarray]:
    """`count` BGR frames: the photos take turns (equal shares of the frames), each sliding left to right."""
    bg = background(width, height)
    sprites = []
    for name in photos:
        photo = skimage_photo(name)
        ph = int(height * photo_height_ratio)
        pw = min(width, int(photo.shape[1] * ph / photo.shape[0]))
        sprites.append(cv2.resize(photo, (pw, ph), interpolation=cv2.INTER_AREA))
    per_photo = max(1, -(-count // len(sprites)))
    for i in range(count):
        sprite = sprites[min(i // per_photo, len(sprites) - 1)]
        ph, pw = sprite.shape[:2]
        travel = max(0, width - pw)
        step = (i % per_photo) / max(1, per_photo - 1)
        x = int(travel * step)
        y = (height - ph) // 2
        frame = bg.copy()
        frame[y : y + ph, x : x + pw] = sprite
        yield frame


def write_video(path: str | Path, frames: Iterator[np.ndarray], fps: float, fourcc: str = "MJPG") -> int:
    """Write BGR frames to `path`; returns the number written. Raises if OpenCV cannot write this container."""
    writer: cv2.VideoWriter | None = None
    written = 0
    try:
        for frame in frames:
            if writer is None:
                h, w = frame.shape[:2]
                writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*fourcc), fps, (w, h))
                if not writer.isOpened():
                    raise RuntimeError(f"OpenCV cannot write {path} with fourcc {fourcc}")
            writer.write(frame)
            written += 1
    finally:
        if writer is not None:
            writer.release()
    return written


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="output video, e.g. demo.avi (MJPG)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--fps", type=float, default=15.0)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--photos", default=",".join(DEFAULT_PHOTOS), help="skimage/data photo names")
    args = parser.parse_args(argv)
    count = max(1, round(args.seconds * args.fps))
    frames = moving_photo_frames(count, width=args.width, height=args.height, photos=args.photos.split(","))
    n = write_video(args.out, frames, args.fps)
    print(f"wrote {n} frames ({args.width}x{args.height} @ {args.fps:g} fps) to {args.out}")


if __name__ == "__main__":
    main()
