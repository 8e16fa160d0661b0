"""Golden sets: photos and the labels a model must find in them, above a score floor.

The model validator (`python -m korall_workloads.validate`, the operator's validation Job) judges a new model on
one before it may serve in production, and the vision service runs the same set once after its warm-up, before
/ready answers 200 (SELF_TEST_GOLDEN_SET), so that a model that loads but sees nothing never takes traffic.

A golden set is a folder holding `golden.json` and the images it names, or a tar archive of such a folder (a
golden set downloaded from a URL). `golden.json`:

    {"schema": "korall.golden.v1", "minScore": 0.5,
     "cases": [{"image": "chelsea.jpg", "expect": ["cat"], "minScore": 0.6},
               {"image": "grass.jpg", "expect": []}]}

Each case passes when every label in `expect` is detected at `minScore` or more (the case's, else the set's, else
0.5); a case whose `expect` is empty passes when nothing at all is detected at that score. Pure file and image
handling: the caller supplies the detections, so this module knows no interpreter.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

GOLDEN_FILE = "golden.json"
SCHEMA = "korall.golden.v1"
DEFAULT_MIN_SCORE = 0.5
MAX_CASES = 200
MAX_IMAGE_PIXELS = 40_000_000
REPORTED_DETECTIONS = 3  # the best few detections of a case, in its outcome

Detections = Sequence[tuple[str, float]]
"""(label, score) pairs of one image, any order."""


class GoldenSetError(Exception):
    """The golden set cannot be used (missing, not a golden set, a bad image): not the model's fault."""


@dataclass(frozen=True)
class GoldenCase:
    image: str
    expect: tuple[str, ...]
    min_score: float
    rgb: np.ndarray  # decoded once, when the set is loaded


@dataclass(frozen=True)
class GoldenSet:
    source: str  # where it was read from, for messages
    cases: tuple[GoldenCase, ...]


@dataclass(frozen=True)
class CaseOutcome:
    image: str
    expect: tuple[str, ...]
    min_score: float
    found: tuple[tuple[str, float], ...]  # the best detections, highest first
    passed: bool

    def explain(self) -> str:
        """Why it failed, in a few words a person reads."""
        best = ", ".join(f"{label} {score:.2f}" for label, score in self.found) or "nothing"
        if not self.expect:
            return f"{self.image}: expected nothing at {self.min_score:g} or more, found {best}"
        return f"{self.image}: expected {'+'.join(self.expect)} at {self.min_score:g} or more, found {best}"

    def as_json(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "expect": list(self.expect),
            "minScore": self.min_score,
            "found": [[label, round(score, 3)] for label, score in self.found],
            "passed": self.passed,
        }


def load_golden_set(path: Path, workdir: Path | None = None) -> GoldenSet:
    """Read a golden set from a folder, or from a tar archive extracted into `workdir` (which must then be given).

    Every image is decoded here: a set that cannot be read fails now, with GoldenSetError, never as a model fault.
    """
    if path.is_file():
        if workdir is None:
            raise GoldenSetError(f"{path} is an archive and there is no folder to extract it into")
        folder = _extract(path, workdir)
    elif path.is_dir():
        folder = path
    else:
        raise GoldenSetError(f"golden set {path} does not exist")
    try:
        spec = json.loads((folder / GOLDEN_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GoldenSetError(f"golden set {path} has no {GOLDEN_FILE}") from None
    except (OSError, ValueError) as exc:
        raise GoldenSetError(f"{GOLDEN_FILE} of golden set {path} cannot be read: {exc}") from exc
    return GoldenSet(str(path), tuple(_cases(spec, folder, str(path))))


def _extract(archive: Path, workdir: Path) -> Path:
    """Extract a tar archive safely (no links out, no absolute paths: tarfile's data filter) and find the folder
    holding golden.json: the archive's root, or its one top folder."""
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(workdir, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise GoldenSetError(f"golden set archive {archive} cannot be extracted: {exc}") from exc
    if (workdir / GOLDEN_FILE).is_file():
        return workdir
    tops = [p for p in workdir.iterdir() if p.is_dir()]
    if len(tops) == 1 and (tops[0] / GOLDEN_FILE).is_file():
        return tops[0]
    raise GoldenSetError(f"golden set archive {archive} holds no {GOLDEN_FILE} at its root or in one top folder")


def _score(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise GoldenSetError(f"{where}: minScore must be a number from 0 to 1, got {value!r}")
    return float(value)


def _cases(spec: Any, folder: Path, source: str) -> list[GoldenCase]:
    if not isinstance(spec, dict) or spec.get("schema", SCHEMA) != SCHEMA:
        raise GoldenSetError(f"{source}/{GOLDEN_FILE} is not a {SCHEMA} object")
    default = _score(spec.get("minScore", DEFAULT_MIN_SCORE), f"{source}/{GOLDEN_FILE}")
    raw = spec.get("cases")
    if not isinstance(raw, list) or not raw or len(raw) > MAX_CASES:
        raise GoldenSetError(f"{source}/{GOLDEN_FILE}: `cases` must be a list of 1 to {MAX_CASES} cases")
    cases = []
    for number, case in enumerate(raw):
        where = f"{source}/{GOLDEN_FILE} case {number}"
        if not isinstance(case, dict) or not isinstance(case.get("image"), str):
            raise GoldenSetError(f"{where}: needs `image`, a file name")
        expect = case.get("expect", [])
        if not isinstance(expect, list) or not all(isinstance(x, str) and x for x in expect):
            raise GoldenSetError(f"{where}: `expect` must be a list of labels")
        image = folder / case["image"]
        if folder.resolve() not in image.resolve().parents:
            raise GoldenSetError(f"{where}: image {case['image']!r} is outside the golden set")
        min_score = _score(case.get("minScore", default), where)
        cases.append(GoldenCase(case["image"], tuple(expect), min_score, _decode(image, where)))
    return cases


def _decode(path: Path, where: str) -> np.ndarray:
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise GoldenSetError(f"{where}: image {path.name} is missing") from None
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise GoldenSetError(f"{where}: image {path.name} cannot be decoded: {exc}") from exc


def judge(case: GoldenCase, detections: Detections) -> CaseOutcome:
    """The outcome of one case, given every detection the model made in its image."""
    best: dict[str, float] = {}
    for label, score in detections:
        best[label] = max(score, best.get(label, 0.0))
    if case.expect:
        passed = all(best.get(label, 0.0) >= case.min_score for label in case.expect)
    else:
        passed = not any(score >= case.min_score for score in best.values())
    ranked = sorted(best.items(), key=lambda item: -item[1])[:REPORTED_DETECTIONS]
    return CaseOutcome(case.image, case.expect, case.min_score, tuple(ranked), passed)


def run_golden_set(golden: GoldenSet, detect: Callable[[np.ndarray], Detections]) -> list[CaseOutcome]:
    """Every case of the set, judged on what `detect` (an RGB array -> its detections) finds."""
    return [judge(case, detect(case.rgb)) for case in golden.cases]


def summary(outcomes: Sequence[CaseOutcome]) -> str:
    """One line: how many passed, and why the first failures failed."""
    failed = [o for o in outcomes if not o.passed]
    head = f"{len(outcomes) - len(failed)}/{len(outcomes)} golden images passed"
    return head if not failed else f"{head}; " + "; ".join(o.explain() for o in failed[:3])
