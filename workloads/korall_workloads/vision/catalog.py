"""The models directory: manifest entries, checksums, Edge TPU / CPU variants and label files.

Pure file-level knowledge, no interpreter: the runtime asks here which file to load and which checksum to
expect, and GET /models lists what is here. A file missing from the manifest still works; its Edge TPU flag
then comes from the `_edgetpu` name suffix Coral's compiler gives its output, or, for a file without a .tflite
name (a downloaded model in the node cache, `sha256/<hex>`), from its content.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from korall_workloads.common.errors import ServiceError

log = logging.getLogger(__name__)

EDGETPU_SUFFIX = "_edgetpu"
EDGETPU_CUSTOM_OP = b"edgetpu-custom-op"  # the op Coral's compiler puts the compiled graph in


class ModelFileError(Exception):
    """A model or labels file is missing, unreadable or fails its checksum; the message says which and why."""


class ModelsDirUnreadable(ModelFileError, ServiceError):
    """GET /models cannot list MODELS_DIR (a fault of the service's set-up, not of the request)."""

    code = "models_dir_unreadable"


@dataclass(frozen=True)
class ModelEntry:
    """What we know about one model file before loading it."""

    name: str
    file: str
    path: Path
    edgetpu: bool
    sha256: str | None  # expected, from the manifest
    labels: str | None
    input_size: tuple[int, int] | None
    cpu_variant: str | None
    edgetpu_variant: str | None


def read_manifest(models_dir: Path) -> dict[str, dict[str, Any]]:
    """Manifest entries by file name; an absent or unreadable manifest is an empty one (logged)."""
    path = models_dir / "manifest.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
        return {str(m["file"]): m for m in data.get("models", [])}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("ignoring unreadable %s: %s", path, exc)
        return {}


def is_edgetpu_file(path: Path) -> bool:
    """A .tflite file says it by its name (`*_edgetpu.tflite`, as Coral's compiler names its output). A file
    without that name, such as a downloaded model in the node cache (`sha256/<hex>`), says it by its content."""
    if path.suffix == ".tflite":
        return path.stem.endswith(EDGETPU_SUFFIX)
    return _contains(path, EDGETPU_CUSTOM_OP)


def _contains(path: Path, needle: bytes) -> bool:
    """Whether the file holds `needle`, read in 1 MiB blocks; an unreadable file does not (loading says why)."""
    tail = b""
    try:
        with path.open("rb") as f:
            while block := f.read(1 << 20):
                if needle in tail + block:
                    return True
                tail = block[-(len(needle) - 1) :]
    except OSError:
        return False
    return False


def entry_for(path: Path, manifest: dict[str, dict[str, Any]] | None = None) -> ModelEntry:
    """The manifest entry for `path` (looked up by file name in its own folder), or one derived from the name."""
    if manifest is None:
        manifest = read_manifest(path.parent)
    m = manifest.get(path.name, {})
    edgetpu = bool(m.get("edgetpu", is_edgetpu_file(path)))
    stem = path.stem
    if edgetpu:
        guess_cpu = stem[: -len(EDGETPU_SUFFIX)] + path.suffix if stem.endswith(EDGETPU_SUFFIX) else None
        cpu_variant, edgetpu_variant = m.get("cpu_variant", guess_cpu), None
    else:
        cpu_variant, edgetpu_variant = None, m.get("edgetpu_variant", f"{stem}{EDGETPU_SUFFIX}{path.suffix}")
    size = m.get("input_size")
    return ModelEntry(
        name=str(m.get("name", stem)),
        file=path.name,
        path=path,
        edgetpu=edgetpu,
        sha256=m.get("sha256"),
        labels=m.get("labels"),
        input_size=(int(size[0]), int(size[1])) if size else None,
        cpu_variant=cpu_variant,
        edgetpu_variant=edgetpu_variant,
    )


_sha_cache: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """sha256 of a file, cached by (path, size, mtime) so GET /models does not rehash unchanged files."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _sha_cache:
        h = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _sha_cache[key] = h.hexdigest()
    return _sha_cache[key]


_held: dict[Path, int] = {}  # models of the node cache this process holds, and the descriptors that hold them


def _in_node_cache(path: Path) -> bool:
    return path.parent.name == "sha256" and path.with_name(f"{path.name}.lock").is_file()


def hold_if_cached(path: Path, wait_s: float = 5.0) -> None:
    """Hold a model of the node's download cache (`<cache>/sha256/<hex>`, the downloader's `<hex>.lock` beside it)
    with a shared flock for as long as this process runs: the cache's collection removes no model a process holds
    (korall_workloads.fetch.cache). A file that is not in such a cache (bundled in the image) is left alone."""
    if path in _held or not _in_node_cache(path):
        return
    try:
        fd = os.open(path.with_name(f"{path.name}.lock"), os.O_RDONLY)  # the cache is mounted read-only here
    except OSError as exc:  # not readable by this user: the service runs, unprotected from the cache's collection
        log.warning("cannot hold %s in the node's model cache (%s); running without", path, exc.strerror or exc)
        return
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            _held[path] = fd
            return
        except BlockingIOError:  # a collection looks at it this instant, or a download of it runs
            if time.monotonic() >= deadline:
                os.close(fd)
                log.warning("could not hold %s in the node's model cache for %g s; running without", path, wait_s)
                return
            time.sleep(0.05)


def gone_from_cache(path: Path) -> str:
    """What more to say of a missing model file: for one of the node's cache, that it was removed, and what to do."""
    if not _in_node_cache(path):
        return ""
    return (
        "; it is no longer in the node's model cache (removed while no process held it: MODEL_CACHE_MAX_BYTES): "
        "delete this pod, its replacement downloads it again"
    )


def verify_sha256(path: Path, expected: str | None, source: str) -> str:
    """Return the file's sha256; raise ModelFileError if `expected` is given and differs."""
    if not path.is_file():
        raise ModelFileError(f"model file {path} does not exist{gone_from_cache(path)}")
    actual = file_sha256(path)
    if expected and actual.lower() != expected.lower():
        raise ModelFileError(
            f"model file {path} has sha256 {actual}, but {source} expects {expected.lower()}; refusing to load it"
        )
    if not expected:
        log.warning("no expected sha256 for %s (not in manifest.json, MODEL_SHA256 unset); it is %s", path, actual)
    return actual


def read_labels(path: Path) -> dict[int, str]:
    """Labels by class id. Lines are `id  name` (ids may have gaps) or just `name` (the id is the line number)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ModelFileError(f"labels file {path} cannot be read: {exc.strerror or exc}") from exc
    labels: dict[int, str] = {}
    for number, raw in enumerate(text.splitlines()):
        line = raw.strip()
        if not line:
            continue
        head, _, rest = line.partition(" ")
        if head.isdigit() and rest.strip():
            labels[int(head)] = rest.strip()
        else:
            labels[number] = line
    if not labels:
        raise ModelFileError(f"labels file {path} has no labels")
    return labels


def list_models(models_dir: Path, active: Path | None) -> list[dict[str, Any]]:
    """Every .tflite file in the folder with name, size, sha256, Edge TPU flag and whether it is the active one."""
    manifest = read_manifest(models_dir)
    out = []
    try:
        files = sorted(p for p in models_dir.iterdir() if p.suffix == ".tflite" and p.is_file())
    except OSError as exc:
        raise ModelsDirUnreadable(f"models directory {models_dir} cannot be listed: {exc.strerror or exc}") from exc
    active_real = os.path.realpath(active) if active else None
    for path in files:
        entry = entry_for(path, manifest)
        sha = file_sha256(path)
        out.append(
            {
                "name": entry.name,
                "file": entry.file,
                "bytes": path.stat().st_size,
                "sha256": sha,
                "sha256_verified": None if entry.sha256 is None else entry.sha256.lower() == sha,
                "edgetpu": entry.edgetpu,
                "active": active_real is not None and os.path.realpath(path) == active_real,
            }
        )
    return out
