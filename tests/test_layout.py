"""The architecture's import rules, checked on the real packages.

Three deployables share one repository: the operator never imports workload code (its image has no LiteRT,
OpenCV or PortAudio), the workloads never import the operator (their images have no kopf), and the folder
`operator/` never shadows the standard library's `operator` module. The import rules themselves, and the layers
inside the workloads, are import-linter contracts in `.importlinter` (run by `make lint`, and here, so that a
bare `pytest` enforces them too). What a static linter cannot see, a module loaded at run time by a library or
by name, is checked by importing every module in a fresh interpreter; tests/test_extras.py goes further and runs
each deployable in a venv where the others' packages are not even installed.
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


def _loaded_after_importing(package: str, folder: str) -> set[str]:
    """Import every module of `package` in a fresh interpreter; the top-level modules it then holds."""
    code = (
        "import importlib, json, sys\n"
        f"for m in {_modules(package, folder)!r}:\n"
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


def test_the_import_contracts_hold() -> None:
    lint = subprocess.run(
        [str(Path(sys.executable).with_name("lint-imports"))], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert lint.returncode == 0, lint.stdout[-3000:]
    assert "0 broken" in lint.stdout


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


@pytest.mark.parametrize(
    ("package", "folder", "never"),
    [
        ("korall_operator", "operator", {"korall_workloads", "ai_edge_litert", "cv2", "sounddevice", "fastapi"}),
        ("korall_workloads", "workloads", {"korall_operator", "kopf", "kubernetes_asyncio"}),
    ],
    ids=["operator", "workloads"],
)
def test_nothing_loads_the_other_deployables_at_run_time(package: str, folder: str, never: set[str]) -> None:
    loaded = _loaded_after_importing(package, folder)
    assert package in loaded
    assert not loaded & never
