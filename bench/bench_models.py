"""Choosing a model on data: every model in models/ over a folder of images, latency and detections per model.

    .venv/bin/python bench/bench_models.py                         # scikit-image's photos, CPU models
    .venv/bin/python bench/bench_models.py --images ~/snapshots --score-th 0.4 --repeat 5

For each .tflite file in MODELS_DIR (default: the repository's models/) and each image (JPEG, PNG, ... in the
folder; default: scikit-image's bundled photos), the image goes through the service's own preprocessing and
Detector, `--repeat` times; printed per model: invoke median and p95, and per image the labels above the score
threshold. Edge TPU builds run only where libedgetpu and a TPU are present (ACCELERATOR=edgetpu); otherwise
the table says why they were skipped. No targets here: this is for comparing models on your own pictures.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import skimage

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_IMAGES = Path(skimage.__file__).parent / "data"
PHOTOS = ("astronaut", "chelsea", "coffee", "motorcycle_left", "grass", "rocket", "camera")
SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


def images_in(folder: Path, default: bool) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES and p.is_file())
    if default:
        files = [p for p in files if p.stem in PHOTOS]
    return files


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, default=None, help="folder of images (default: scikit-image photos)")
    parser.add_argument("--models-dir", type=Path, default=ROOT / "models")
    parser.add_argument("--score-th", type=float, default=0.5)
    parser.add_argument("--repeat", type=int, default=3, help="inferences per image and model (default 3)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (default: all cores but one)")
    args = parser.parse_args()

    from korall_workloads.vision.catalog import entry_for
    from korall_workloads.vision.detector import Detector
    from korall_workloads.vision.preprocess import ImageError, prepare_image
    from korall_workloads.vision.runtime import ModelLoadError
    from korall_workloads.vision.settings import VisionSettings

    images = images_in(args.images or DEFAULT_IMAGES, default=args.images is None)
    if not images:
        print(f"no images in {args.images}")
        return 1
    print(
        f"{len(images)} images from {args.images or DEFAULT_IMAGES}; score >= {args.score_th}, {args.repeat} runs each"
    )
    summary = []
    for model_file in sorted(args.models_dir.glob("*.tflite")):
        entry = entry_for(model_file)
        settings = VisionSettings(
            models_dir=args.models_dir,
            model_path=model_file.name,
            accelerator="edgetpu" if entry.edgetpu else "cpu",
            num_threads=args.threads,
            score_th=args.score_th,
        )
        detector = Detector(settings)
        try:
            detector.load()
        except ModelLoadError as exc:
            print(f"\n{entry.name}: skipped ({exc})")
            summary.append((entry.name, "skipped", float("nan"), float("nan"), 0))
            detector.close()
            continue
        model = detector.model
        assert model is not None
        print(f"\n{entry.name} ({model.accelerator}, {model.entry.file})")
        invokes: list[float] = []
        found: Counter[str] = Counter()
        for path in images:
            try:
                prepared = prepare_image(path.read_bytes(), model.input_size, settings.max_image_pixels)
            except ImageError as exc:
                print(f"  {path.name:<28} unreadable: {exc.message}")
                continue
            for _ in range(args.repeat):
                result = detector.detect(prepared.tensor)
                invokes.append(result.timings.invoke_ms)
            labels = [f"{d.label} {d.score:.2f}" for d in result.detections]
            found.update(d.label for d in result.detections)
            print(f"  {path.name:<28} {prepared.width}x{prepared.height:<6} {', '.join(labels) or '-'}")
        detector.close()
        p50, p95 = statistics.median(invokes), float(np.percentile(invokes, 95))
        summary.append((entry.name, model.accelerator, p50, p95, sum(found.values())))

    print(f"\n{'model':<36} {'accelerator':<11} {'invoke p50':>10} {'p95':>8} {'detections':>10}")
    for name, acc, p50, p95, n in summary:
        print(f"{name:<36} {acc:<11} {p50:>10.2f} {p95:>8.2f} {n:>10}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
