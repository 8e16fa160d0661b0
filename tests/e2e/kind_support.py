"""Helpers of the kind end-to-end suite: a throw-away kind cluster with a fake Coral TPU and korall installed.

Everything here needs a Docker engine and the `kind` binary; without them every test of this folder is skipped
with the reason. helm and kubectl come pinned from scripts/tools.sh. Set KORALL_E2E_KEEP=1 to keep the cluster
after the run (for debugging: `kind export kubeconfig --name korall-e2e`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = os.environ.get("KORALL_E2E_CLUSTER", "korall-e2e")
TAG = "e2e"
OPERATOR_IMAGE = f"ghcr.io/korall-project/korall-operator:{TAG}"
VISION_IMAGE = f"ghcr.io/korall-project/korall-vision:{TAG}"
RELEASE_NAMESPACE = "korall-system"


def why_no_kind() -> str | None:
    if shutil.which("docker") is None:
        return "docker is not installed"
    info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=60)
    if info.returncode != 0:
        return f"no Docker engine answers `docker info`: {(info.stderr or info.stdout).strip()[:200]}"
    if shutil.which("kind") is None:
        return "kind is not installed (https://kind.sigs.k8s.io/docs/user/quick-start/#installation)"
    return None


def run(
    *args: str, timeout: float = 600, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command, echo it, and fail with its output when it fails."""
    print("+", " ".join(args), flush=True)
    out = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    if check and out.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return out


@dataclass(frozen=True)
class KindCluster:
    name: str
    kubeconfig: Path
    bin: Path
    node: str

    def kubectl(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(str(self.bin / "kubectl"), "--kubeconfig", str(self.kubeconfig), *args, timeout=timeout, check=check)

    def helm(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return run(str(self.bin / "helm"), "--kubeconfig", str(self.kubeconfig), *args, timeout=timeout)
