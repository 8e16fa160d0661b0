"""`python -m korall_tools.golden [folder]`: write the vision image's default golden set (models/golden/).

Four of scikit-image's bundled photos, each licensed for redistribution (CC0 or public domain, as scikit-image's
`skimage/data/_fetchers.py` states for each), scaled to 320 pixels on the long side and saved as JPEG, with the
COCO labels SSD MobileNet v2 must find in them and the score floor it must reach (golden.json). The floors leave
a margin below what the bundled CPU model scores (chelsea cat 0.84, coffee cup 0.91, astronaut person 0.73) for
the Edge TPU build's rounding; the lawn must yield nothing at 0.5 or more (a model that sees objects everywhere
fails). scikit-image's motorcycle is left out: it comes from the Middlebury stereo benchmark, whose licence is
not stated.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

# photo -> (what scikit-image says of its licence, the labels it must yield, the floor)
PHOTOS: dict[str, tuple[str, list[str], float]] = {
    "chelsea": ("CC0, by the photographer Stefan van der Walt", ["cat"], 0.6),
    "coffee": ("CC0, by the photographer Rachel Michetti", ["cup"], 0.6),
    "astronaut": ("public domain (NASA Great Images database)", ["person"], 0.5),
    "grass": ("CC0 (DeviantArt linolafett, Grass-01)", [], 0.5),
}
LONG_SIDE = 320
QUALITY = 85


def golden_json() -> dict[str, Any]:
    return {
        "schema": "korall.golden.v1",
        "description": "korall's default golden set: scikit-image photos and the COCO labels they must yield",
        "minScore": 0.5,
        "cases": [
            {"image": f"{name}.jpg", "expect": labels, "minScore": floor, "licence": licence}
            for name, (licence, labels, floor) in PHOTOS.items()
        ],
    }


def write(folder: Path) -> None:
    import skimage
    from PIL import Image

    data = Path(skimage.__file__).parent / "data"
    folder.mkdir(parents=True, exist_ok=True)
    for name in PHOTOS:
        image = Image.open(data / f"{name}.png").convert("RGB")
        image.thumbnail((LONG_SIDE, LONG_SIDE))
        image.save(folder / f"{name}.jpg", "JPEG", quality=QUALITY)
    (folder / "golden.json").write_text(json.dumps(golden_json(), indent=2) + "\n")


if __name__ == "__main__":
    write(Path(sys.argv[1] if len(sys.argv) > 1 else "models/golden"))
