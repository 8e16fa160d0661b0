"""A model delivered by the downloader: the vision service loads it from the node cache and checks it again.

The init container (`python -m korall_workloads.fetch`, a real process fetching from a stdlib HTTP server)
leaves the model at `<cache>/sha256/<hex>`, a name without `.tflite`; the service is pointed there with
MODEL_PATH and MODEL_SHA256, as the operator will do, and verifies the sha256 again before the interpreter
sees the file, so a file changed after the download never loads.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from korall_contract import FetchEnv, env_names
from korall_workloads.vision.catalog import entry_for
from korall_workloads.vision.detector import Detector
from korall_workloads.vision.runtime import ModelLoadError, open_model
from vision_helpers import MODELS, photo_rgb, settings

CPU = MODELS / "mobilenet_ssd_v2_coco_quant_postprocess.tflite"
TPU = MODELS / "mobilenet_ssd_v2_coco_quant_postprocess_edgetpu.tflite"
LABELS = str(MODELS / "coco_labels.txt")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def in_cache(tmp_path: Path, model: Path) -> Path:
    """Put `model` where the downloader would, without the downloader (for the load-time checks)."""
    target = tmp_path / "cache" / "sha256" / sha256(model)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model, target)
    return target


@pytest.fixture
def models_server() -> Iterator[str]:
    """A plain static file server (the standard library's) over the models folder."""
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(MODELS))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_model_downloaded_into_the_cache_loads_and_detects(tmp_path: Path, models_server: str) -> None:
    digest = sha256(CPU)
    env = {k: v for k, v in os.environ.items() if k not in env_names(FetchEnv)}
    env.update(
        {
            FetchEnv.MODEL_SHA256: digest,
            FetchEnv.MODEL_URL: f"{models_server}/{CPU.name}",
            FetchEnv.MODEL_CACHE_DIR: str(tmp_path / "cache"),
        }
    )
    fetched = subprocess.run([sys.executable, "-m", "korall_workloads.fetch"], env=env, capture_output=True, timeout=60)
    assert fetched.returncode == 0, fetched.stderr
    path = tmp_path / "cache" / "sha256" / digest
    det = Detector(settings(model_path=str(path), model_sha256=digest, labels_path=LABELS))
    try:
        det.load()
        assert det.status()["sha256"] == digest
        assert det.detect(photo_rgb("chelsea")).detections[0].label == "cat"
    finally:
        det.close()


def test_a_cached_model_changed_after_the_download_is_refused_at_load(tmp_path: Path) -> None:
    path = in_cache(tmp_path, CPU)
    path.write_bytes(path.read_bytes()[:-1] + b"\0")
    with pytest.raises(ModelLoadError, match=f"but MODEL_SHA256 expects {sha256(CPU)}; refusing to load it"):
        open_model(settings(model_path=str(path), model_sha256=sha256(CPU), labels_path=LABELS))


def test_an_edge_tpu_build_in_the_cache_is_known_by_its_content(tmp_path: Path) -> None:
    tpu, cpu = in_cache(tmp_path, TPU), in_cache(tmp_path, CPU)
    assert entry_for(tpu).edgetpu and not entry_for(cpu).edgetpu
    # Without a TPU here, it is refused for what it is, not handed to the CPU interpreter to fail on its op.
    with pytest.raises(ModelLoadError, match="is an Edge TPU model and no CPU build of it"):
        open_model(settings(model_path=str(tpu), model_sha256=sha256(TPU), labels_path=LABELS, accelerator="auto"))


def test_the_service_holds_its_cached_model_so_the_cache_never_removes_it_and_says_so_if_it_is_gone(
    tmp_path: Path,
) -> None:
    """The lock the node cache's collection must take to remove a model (exclusive, not waiting) is refused
    while a service runs on it; a model removed before its service started is named as such, with what to do."""
    import fcntl

    path = in_cache(tmp_path, CPU)
    lock = path.with_name(f"{path.name}.lock")
    lock.touch()  # the downloader's lock file, beside every model it fetched
    open_model(settings(model_path=str(path), model_sha256=sha256(CPU), labels_path=LABELS))
    fd = os.open(lock, os.O_RDWR)
    try:
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)

    gone = tmp_path / "cache" / "sha256" / ("0" * 64)
    gone.with_name(f"{gone.name}.lock").touch()
    with pytest.raises(ModelLoadError, match=r"no longer in the node's model cache .* delete this pod"):
        open_model(settings(model_path=str(gone), model_sha256="0" * 64, labels_path=LABELS))
