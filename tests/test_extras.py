"""Each deployable's extra, installed alone into a clean venv, starts its entry point: what each image builds.

The dev venv holds every extra at once, so a module one deployable needs but only another's extra installs (the
operator importing pydantic_settings, once only in `service`) would pass every other test and still break an
image. Here each extra is installed as its Dockerfile installs it: from a copy of the checkout holding only
pyproject, constraints.txt, the contract and that deployable's folder (the others empty), with
`pip install -c constraints.txt --no-compile '.[extra]'` into a venv of its own. Then its entry point runs for
real: the operator's CLI, the vision service answering /ready and /infer on a free port, the audio service
processing a WAV of espeak-ng speech; and the venv must lack what belongs to the other deployables.

The three installs run at once (pip mostly waits on I/O); the whole module takes about 30 s on two cores, 18 s
of it the installs.
Skip it while iterating: `pytest -m "not extras"`.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import skimage.data

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.extras

FOLDER = {"vision": "workloads", "audio": "workloads", "operator": "operator"}
"""The deployable folder each extra's image copies beside contract/ (the Dockerfiles say the same: checked below)."""

FOLDERS = ("contract", "operator", "workloads")

NOT_IN = {  # korall_tools: the development generators, which no image carries
    "operator": [
        "korall_tools",
        "korall_workloads",
        "cv2",
        "ai_edge_litert",
        "sounddevice",
        "onnxruntime",
        "fastapi",
        "uvicorn",
    ],
    "vision": ["korall_tools", "korall_operator", "kopf", "kubernetes_asyncio", "sounddevice", "onnxruntime"],
    "audio": ["korall_tools", "korall_operator", "kopf", "kubernetes_asyncio", "cv2", "ai_edge_litert"],
}
"""Top-level modules that must not be importable in each extra's venv."""


def install(extra: str, work: Path) -> Path:
    """Stage the image's build context for `extra`, install it into a new venv there; returns the venv's python."""
    src = work / "src"
    src.mkdir(parents=True)
    for name in ("pyproject.toml", "constraints.txt", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for folder in FOLDERS:
        if folder in ("contract", FOLDER[extra]):
            shutil.copytree(ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (src / folder).mkdir()  # pyproject maps every folder; the Dockerfile leaves the others empty
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    # The dev venv's pip installs into the new venv (--python): the same resolver, no pip of its own to set up.
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-compile"]
    done = subprocess.run(
        [*pip, "-c", "constraints.txt", f".[{extra}]"], cwd=src, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, f"pip install '.[{extra}]' failed:\n{done.stdout}\n{done.stderr[-4000:]}"
    return python


@pytest.fixture(scope="module")
def venvs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("extras")
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {extra: pool.submit(install, extra, base / extra) for extra in FOLDER}
        return {extra: future.result() for extra, future in futures.items()}


def clean_env(**extra: str) -> dict[str, str]:
    """No PYTHONPATH, no dev venv: only what the new venv holds."""
    return {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp"), **extra}


def importable(python: Path, modules: list[str]) -> dict[str, bool]:
    code = f"import importlib.util as u, json; print(json.dumps({{m: bool(u.find_spec(m)) for m in {modules!r}}}))"
    out = subprocess.run([str(python), "-c", code], env=clean_env(), capture_output=True, text=True, check=True)
    return dict(json.loads(out.stdout))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def serving(
    python: Path, module: str, env: dict[str, str], check: Callable[[str], None], timeout_s: float = 60
) -> None:
    """Run `python -m module` on a free port until `check(base_url)` passes (retried while it raises)."""
    port = free_port()
    proc = subprocess.Popen(
        [str(python), "-m", module],
        env=clean_env(HOST="127.0.0.1", PORT=str(port), **env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                check(f"http://127.0.0.1:{port}")
                return
            except (httpx.TransportError, AssertionError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    proc.kill()
                    raise AssertionError(f"{module} never passed its check:\n{proc.communicate()[1][-3000:]}") from None
                time.sleep(0.2)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(10)


def assert_page_served(url: str, script: str) -> None:
    """The live page and its files ship in the wheel (package data), not only in the checkout."""
    page = httpx.get(f"{url}/", timeout=5)
    assert page.status_code == 200 and f"static/{script}" in page.text, page.text[:300]
    for name in (script, "korall.js", "korall.css", "favicon.svg"):
        assert httpx.get(f"{url}/static/{name}", timeout=5).status_code == 200, name


@pytest.mark.parametrize("extra", sorted(FOLDER))
def test_each_image_copies_the_contract_and_its_own_folder_only(extra: str) -> None:
    """What this module stages is what the Dockerfile builds from."""
    text = (ROOT / f"Dockerfile.{extra}").read_text()
    copied = {line.split()[1] for line in text.splitlines() if line.startswith("COPY ") and "--from" not in line}
    assert {"contract", FOLDER[extra]} <= copied
    assert not (set(FOLDERS) - {"contract", FOLDER[extra]}) & copied
    assert f"'.[{extra}]'" in text and "-c constraints.txt" in text


def test_the_operator_extra_alone_runs_the_operator(venvs: dict[str, Path]) -> None:
    python = venvs["operator"]
    out = subprocess.run(
        [str(python), "-m", "korall_operator", "--help"], env=clean_env(), capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: python -m korall_operator")
    # The image's own build check, then what its ENTRYPOINT (kopf run -m korall_operator.handlers) imports.
    check = "import korall_operator.manifests, korall_operator.handlers, kopf"
    subprocess.run([str(python), "-c", check], env=clean_env(), check=True, timeout=60)
    assert importable(python, NOT_IN["operator"]) == dict.fromkeys(NOT_IN["operator"], False)
    # The kubectl plugin is the operator extra's console script.
    plugin = subprocess.run([str(python.parent / "kubectl-korall"), "--help"], env=clean_env(), capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert plugin.returncode == 0 and "approve" in plugin.stdout, plugin.stderr


def test_the_vision_extra_alone_serves_detections(venvs: dict[str, Path]) -> None:
    python = venvs["vision"]
    photo = (Path(skimage.data.__path__[0]) / "chelsea.png").read_bytes()

    def detects_the_cat(url: str) -> None:
        assert httpx.get(f"{url}/ready", timeout=5).status_code == 200
        reply = httpx.post(f"{url}/infer", content=photo, headers={"Content-Type": "image/png"}, timeout=30)
        assert reply.status_code == 200, reply.text
        assert reply.json()["detections"][0]["label"] == "cat"
        assert_page_served(url, "vision.js")

    serving(
        python, "korall_workloads.vision", {"MODELS_DIR": str(ROOT / "models"), "NUM_THREADS": "1"}, detects_the_cat
    )
    assert importable(python, NOT_IN["vision"]) == dict.fromkeys(NOT_IN["vision"], False)
    # The validation Job's command, from the same image: the Edge TPU build passes on its structure and its twin.
    model = ROOT / "models" / "mobilenet_ssd_v2_coco_quant_postprocess_edgetpu.tflite"
    env = {**clean_env(), "MODEL_PATH": str(model), "ACCELERATOR": "edgetpu", "MODELS_DIR": str(ROOT / "models"),
           "GOLDEN_SET": str(ROOT / "models" / "golden"), "NUM_THREADS": "1",
           "MODEL_SHA256": "1df6f563746346d656c58aa2ae801b32f2a29e4e4adee46a65aeac6decc5f887"}  # fmt: skip
    done = subprocess.run([str(python), "-m", "korall_workloads.validate"], env=env, capture_output=True, timeout=120)
    assert done.returncode == 0 and json.loads(done.stdout)["result"] == "Passed", done.stderr[-2000:]


def test_the_audio_extra_alone_hears_speech(venvs: dict[str, Path], tmp_path: Path) -> None:
    wav = tmp_path / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), "Turn off the lights, please."], check=True, capture_output=True)
    python = venvs["audio"]
    events: list[dict[str, Any]] = []

    def hears_the_speech(url: str) -> None:
        health = httpx.get(f"{url}/health", timeout=5).json()
        assert health["capture"]["state"] == "finished", health
        events.extend(httpx.get(f"{url}/events", timeout=5).json()["events"])
        assert_page_served(url, "audio.js")

    serving(python, "korall_workloads.audio", {"AUDIO_SOURCE": str(wav), "AUDIO_REALTIME": "false"}, hears_the_speech)
    assert "speech" in [e["type"] for e in events]
    assert importable(python, NOT_IN["audio"]) == dict.fromkeys(NOT_IN["audio"], False)
