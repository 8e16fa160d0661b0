"""The architecture's import rules, checked on the real packages.

Three deployables share one repository: the operator never imports workload code (its image has no LiteRT,
OpenCV or PortAudio), the workloads never import the operator (their images have no kopf), and the folder
`operator/` never shadows the standard library's `operator` module.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _modules(package: str, folder: str) -> list[str]:
    base = ROOT / folder / package
    names = [package]
    for info in pkgutil.walk_packages([str(base)], prefix=f"{package}."):
        if not info.name.rsplit(".", 1)[-1].startswith("__"):
            names.append(info.name)
    return names


def _imported_after(modules: list[str]) -> set[str]:
    """Import the given modules in a fresh interpreter and return every top-level module it then holds."""
    code = (
        "import importlib, json, sys\n"
        f"for m in {modules!r}:\n"
        "    importlib.import_module(m)\n"
        "print(json.dumps(sorted({n.split('.')[0] for n in sys.modules})))\n"
    )
    paths = [str(ROOT / d) for d in ("contract", "operator", "workloads")]
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONPATH": ":".join(paths), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_operator_folder_is_not_a_package() -> None:
    assert not (ROOT / "operator" / "__init__.py").exists()


def test_stdlib_operator_wins_with_repo_root_on_path() -> None:
    out = subprocess.run(
        [sys.executable, "-c", "import operator; print(operator.__file__, operator.itemgetter(1)([0, 7]))"],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    path, value = out.stdout.split()
    assert "python3" in path and not path.startswith(str(ROOT))
    assert value == "7"


@pytest.mark.parametrize("forbidden", ["korall_workloads", "ai_edge_litert", "cv2", "sounddevice", "fastapi"])
def test_operator_never_imports_workload_code(forbidden: str) -> None:
    loaded = _imported_after(_modules("korall_operator", "operator"))
    assert "korall_operator" in loaded
    assert forbidden not in loaded


@pytest.mark.parametrize("forbidden", ["korall_operator", "kopf", "kubernetes_asyncio"])
def test_workloads_never_import_the_operator(forbidden: str) -> None:
    loaded = _imported_after(_modules("korall_workloads", "workloads"))
    assert "korall_workloads" in loaded
    assert forbidden not in loaded


def test_contract_has_no_third_party_imports() -> None:
    loaded = _imported_after(["korall_contract"])
    assert {"pydantic", "fastapi", "kopf", "numpy"}.isdisjoint(loaded)
