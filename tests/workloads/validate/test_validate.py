"""The model validator (`python -m korall_workloads.validate`) on the real bundled models and real photos.

What the operator's validation Job runs, here run directly: the CPU model passes the default golden set (the
scikit-image photos in models/golden), the Edge TPU build passes by its structure and its bundled CPU twin, and
models that must not reach production fail with the reason a person can act on: wrong labels, a damaged file,
a file that is not what its sha256 says, the wrong build for the accelerator. No mocks: the models, the labels
and the photos are the real ones, altered on disk where a test needs a bad one.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
from korall_contract import MAX_TERMINATION_MESSAGE, VALIDATION_RESULT_SCHEMA, ValidateEnv, env_names
from korall_workloads.validate.checks import validate
from korall_workloads.validate.result import Result
from korall_workloads.validate.settings import ValidateSettings
from korall_workloads.vision.golden import CaseOutcome

ROOT = Path(__file__).resolve().parents[3]
MODELS = ROOT / "models"
GOLDEN = MODELS / "golden"
CPU = MODELS / "mobilenet_ssd_v2_coco_quant_postprocess.tflite"
TPU = MODELS / "mobilenet_ssd_v2_coco_quant_postprocess_edgetpu.tflite"
LABELS = MODELS / "coco_labels.txt"


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run(model: Path, **overrides: Any) -> Result:
    values: dict[str, Any] = {
        "model_path": model,
        "model_sha256": sha(model),
        "models_dir": MODELS,
        "golden_set": GOLDEN,
        "num_threads": 1,
        **overrides,
    }
    return validate(ValidateSettings(**values))


def test_the_cpu_model_passes_the_default_golden_set_of_real_photos() -> None:
    result = run(CPU)
    assert (result.verdict, result.reason) == ("Passed", "Validated"), result.message
    assert result.checks == {
        "checksum": "ok",
        "structure": "CPU build, input 1x300x300x3 uint8, 90 classes",
        "run": "cpu",
    }
    by_image = {o.image: o for o in result.images}
    assert set(by_image) == {"chelsea.jpg", "coffee.jpg", "astronaut.jpg", "grass.jpg"}
    assert all(o.passed for o in result.images)
    assert by_image["chelsea.jpg"].found[0][0] == "cat" and by_image["chelsea.jpg"].found[0][1] >= 0.6
    assert all(score < 0.5 for _, score in by_image["grass.jpg"].found)  # the lawn: nothing above the floor


def test_the_edge_tpu_build_is_checked_by_its_structure_and_its_bundled_cpu_twin() -> None:
    result = run(TPU, accelerator="edgetpu")
    assert result.verdict == "Passed", result.message
    assert result.checks["structure"] == "Edge TPU build, input 1x300x300x3 uint8, 90 classes"
    assert result.checks["run"] == f"CPU twin {CPU.name}"
    assert len(result.images) == 4 and all(o.passed for o in result.images)


def test_an_edge_tpu_build_without_a_twin_passes_on_structure_alone(tmp_path: Path) -> None:
    downloaded = tmp_path / sha(TPU)  # as the node cache names it: no manifest, no bundled twin
    shutil.copy(TPU, downloaded)
    result = run(downloaded, accelerator="edgetpu", labels_path=LABELS)
    assert result.verdict == "Passed" and result.images == []
    assert result.checks["run"].startswith("skipped: an Edge TPU build runs on the TPU only")


def test_a_named_cpu_twin_runs_and_must_match_its_checksum(tmp_path: Path) -> None:
    downloaded = tmp_path / sha(TPU)
    shutil.copy(TPU, downloaded)
    good = run(downloaded, accelerator="edgetpu", labels_path=LABELS, twin_model_path=CPU, twin_model_sha256=sha(CPU))
    assert good.verdict == "Passed" and good.checks["twinChecksum"] == "ok" and len(good.images) == 4
    bad = run(downloaded, accelerator="edgetpu", labels_path=LABELS, twin_model_path=CPU, twin_model_sha256="0" * 64)
    assert (bad.verdict, bad.reason) == ("Failed", "ChecksumMismatch")
    assert "CPU twin file" in bad.message


def test_a_model_with_the_wrong_labels_fails_on_the_golden_set(tmp_path: Path) -> None:
    """The right model with a labels file shifted by one name: the cat is called something else."""
    lines = [line.split(maxsplit=1) for line in LABELS.read_text().splitlines() if line.strip()]
    names = [name for _, name in lines]
    shifted = tmp_path / "shifted_labels.txt"
    shifted.write_text("".join(f"{i}  {n}\n" for (i, _), n in zip(lines, names[1:] + names[:1], strict=True)))
    result = run(CPU, labels_path=shifted)
    assert (result.verdict, result.reason) == ("Failed", "GoldenSetMismatch")
    assert "chelsea.jpg: expected cat at 0.6 or more, found dog 0.84" in result.message
    assert not {o.image: o for o in result.images}["chelsea.jpg"].passed


def test_labels_for_classes_the_model_cannot_output_fail_by_structure(tmp_path: Path) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text(LABELS.read_text().rstrip("\n") + "\n90  hoverboard\n91  jetpack\n")
    result = run(CPU, labels_path=labels)
    assert (result.verdict, result.reason) == ("Failed", "LabelsMismatch")
    assert "the model outputs 90 (ids 0..89); ids beyond: [90, 91]" in result.message


def test_a_file_that_is_not_what_its_sha256_says_fails(tmp_path: Path) -> None:
    corrupted = tmp_path / "m.tflite"
    data = bytearray(CPU.read_bytes())
    data[len(data) // 2] ^= 0xFF
    corrupted.write_bytes(bytes(data))
    result = run(corrupted, model_sha256=sha(CPU))
    assert (result.verdict, result.reason) == ("Failed", "ChecksumMismatch")
    assert sha(corrupted) in result.message and sha(CPU) in result.message


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        pytest.param(lambda d: d[: len(d) // 2], "ModelUnreadable", id="truncated"),
        pytest.param(lambda d: d[:3_000_000] + b"\xff" * 200_000 + d[3_200_000:], "GoldenSetMismatch", id="weights"),
    ],
)
def test_a_damaged_file_published_with_its_own_sha256_fails(tmp_path: Path, damage: Any, reason: str) -> None:
    """A broken model whose checksum is right (its publisher hashed the broken bytes): caught further on."""
    damaged = tmp_path / "m.tflite"
    damaged.write_bytes(damage(CPU.read_bytes()))
    result = run(damaged)
    assert (result.verdict, result.reason) == ("Failed", reason), result.message


@pytest.mark.parametrize(
    ("model", "accelerator", "reason"),
    [(CPU, "edgetpu", "NotAnEdgeTPUBuild"), (TPU, "cpu", "NotACPUBuild")],
)
def test_the_build_must_fit_the_accelerator(model: Path, accelerator: str, reason: str) -> None:
    result = run(model, accelerator=accelerator)
    assert (result.verdict, result.reason) == ("Failed", reason)


def _own_golden_set(folder: Path, expect_on_coffee: list[str]) -> Path:
    folder.mkdir()
    shutil.copy(GOLDEN / "coffee.jpg", folder / "mug.jpg")
    spec = {"schema": "korall.golden.v1", "cases": [{"image": "mug.jpg", "expect": expect_on_coffee, "minScore": 0.8}]}
    (folder / "golden.json").write_text(json.dumps(spec))
    return folder


def test_a_users_golden_set_from_a_folder_or_an_archive(tmp_path: Path) -> None:
    folder = _own_golden_set(tmp_path / "mine", ["cup"])
    assert run(CPU, golden_set=folder).verdict == "Passed"
    archive = tmp_path / "golden.tar.gz"  # what a URL golden set is: a tar archive of such a folder
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="mine")
    passed = run(CPU, golden_set=archive)
    assert passed.verdict == "Passed" and [o.image for o in passed.images] == ["mug.jpg"]
    strict = _own_golden_set(tmp_path / "strict", ["cup", "spoon"])
    failed = run(CPU, golden_set=strict)
    assert (failed.verdict, failed.reason) == ("Failed", "GoldenSetMismatch")
    assert "expected cup+spoon at 0.8 or more" in failed.message


@pytest.mark.parametrize(
    ("make", "words"),
    [
        pytest.param(lambda p: p, "does not exist", id="missing"),
        pytest.param(lambda p: (p.mkdir(), p)[1], "has no golden.json", id="no-golden-json"),
        pytest.param(
            lambda p: (p.mkdir(), (p / "golden.json").write_text('{"cases": [{"image": "x.jpg"}]}'), p)[2],
            "image x.jpg is missing",
            id="missing-image",
        ),
        pytest.param(
            lambda p: (p.mkdir(), (p / "golden.json").write_text('{"cases": [{"image": "../m.jpg"}]}'), p)[2],
            "is outside the golden set",
            id="escaping-path",
        ),
        pytest.param(lambda p: (p.write_bytes(b"not a tar archive"), p)[1], "cannot be extracted", id="bad-archive"),
    ],
)
def test_an_unusable_golden_set_is_an_error_not_a_verdict_on_the_model(tmp_path: Path, make: Any, words: str) -> None:
    result = run(CPU, golden_set=make(tmp_path / "golden"))
    assert (result.verdict, result.reason) == ("Error", "GoldenSetUnusable")
    assert words in result.message


def test_the_result_always_fits_a_termination_message() -> None:
    many = [CaseOutcome(f"image-{i:04d}-with-a-long-name.jpg", ("cat", "dog"), 0.5, (("cat", 0.91),), True)
            for i in range(300)]  # fmt: skip
    text = Result("a" * 64, "Failed", "GoldenSetMismatch", "x " * 5000, 1.0, {"run": "cpu"}, many).as_json()
    body = json.loads(text)
    assert len(text.encode()) <= MAX_TERMINATION_MESSAGE
    assert body["schema"] == VALIDATION_RESULT_SCHEMA and body["result"] == "Failed"
    assert body["omitted"] + len(body["images"]) == 300 and body["images"]


def test_the_command_writes_its_json_result_where_kubernetes_reads_it(tmp_path: Path) -> None:
    termination = tmp_path / "termination-log"
    termination.touch()  # the kubelet creates the file; the validator only writes into it
    env = {k: v for k, v in os.environ.items() if k not in env_names(ValidateEnv)}
    env.update({ValidateEnv.MODEL_PATH: str(CPU), ValidateEnv.MODEL_SHA256: sha(CPU),
                ValidateEnv.TERMINATION_MESSAGE_PATH: str(termination), ValidateEnv.NUM_THREADS: "1"})  # fmt: skip
    command = [sys.executable, "-m", "korall_workloads.validate"]
    done = subprocess.run(command, env=env, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(termination.read_text())
    assert (result["result"], result["sha256"], len(result["images"])) == ("Passed", sha(CPU), 4)
    assert json.loads(done.stdout) == result

    env[ValidateEnv.MODEL_SHA256] = "not-a-sha"
    bad = subprocess.run(command, env=env, capture_output=True, timeout=60)
    assert bad.returncode == 2
    result = json.loads(termination.read_text())
    assert (result["result"], result["reason"]) == ("Error", "InvalidConfiguration")
    assert "MODEL_SHA256='not-a-sha'" in result["message"]


def test_the_default_golden_set_is_what_the_tool_generates(tmp_path: Path) -> None:
    """models/golden is reproducible from scikit-image's photos (korall_tools.golden), licences recorded."""
    from korall_tools.golden import golden_json, write

    write(tmp_path)
    assert json.loads((GOLDEN / "golden.json").read_text()) == golden_json()
    for case in golden_json()["cases"]:
        assert case["licence"] and io.BytesIO((GOLDEN / case["image"]).read_bytes()).getbuffer().nbytes < 64_000
        assert (tmp_path / case["image"]).read_bytes() == (GOLDEN / case["image"]).read_bytes()
