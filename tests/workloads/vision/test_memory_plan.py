"""The memory plan (vision/memory_plan.py): the worst case of every limit against the container's memory limit,
and the interpreters fitted in it; the cgroup files it reads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from korall_contract import HttpEnv, VisionEnv, env_names
from korall_workloads.common.http_settings import HttpSettings
from korall_workloads.vision.camera.settings import CaptureSettings
from korall_workloads.vision.memory_plan import MemoryPlanError, container_memory_limit, plan_memory
from korall_workloads.vision.settings import VisionSettings, cpu_limit_cores
from vision_helpers import ROOT

MIB = 1024 * 1024
SAMPLE_POD = 384 * MIB  # samples/cpu-only.yaml


def test_the_defaults_fit_the_sample_pod_with_one_interpreter_per_core_on_two_cores() -> None:
    plan = plan_memory(VisionSettings(), HttpSettings(), limit=SAMPLE_POD, cores=2)
    assert plan.interpreters == 2 and plan.total <= SAMPLE_POD
    assert "limit 384 MiB" in plan.describe()


def test_on_a_large_node_without_a_cpu_limit_only_the_interpreters_that_fit_run() -> None:
    plan = plan_memory(VisionSettings(), HttpSettings(), limit=SAMPLE_POD, cores=16)
    assert 1 <= plan.interpreters < 16 and plan.total <= SAMPLE_POD
    assert plan_memory(VisionSettings(), HttpSettings(), limit=None, cores=16).interpreters == 16


def test_a_camera_counts_its_frames() -> None:
    camera = CaptureSettings(source="rtsp://cam/s", width=1920, height=1080, buffer_frames=8)
    with_camera = plan_memory(VisionSettings(), HttpSettings(), camera, limit=None, cores=2)
    assert with_camera.parts["camera"] == 12 * 1920 * 1080 * 3


@pytest.mark.parametrize(
    ("settings", "limit"),
    [
        (VisionSettings(num_interpreters=8), SAMPLE_POD),  # asked for explicitly: not reduced, refused
        (VisionSettings(), 200 * MIB),
        (VisionSettings(upload_budget_bytes=512 * MIB), 512 * MIB),
    ],
)
def test_limits_that_cannot_fit_are_refused_naming_what_to_lower(settings: VisionSettings, limit: int) -> None:
    with pytest.raises(MemoryPlanError, match="UPLOAD_BUDGET_BYTES, DECODE_BUDGET_BYTES"):
        plan_memory(settings, HttpSettings(), limit=limit, cores=2)


@pytest.mark.parametrize(
    ("files", "limit"),
    [
        ({"memory.max": "max\n"}, None),
        ({"memory.max": "402653184\n"}, 402653184),
        ({"memory/memory.limit_in_bytes": "9223372036854771712\n"}, None),
        ({"memory/memory.limit_in_bytes": "536870912\n"}, 536870912),
        ({}, None),
    ],
)
def test_the_cgroup_memory_limit(tmp_path: Path, files: dict[str, str], limit: int | None) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert container_memory_limit((tmp_path / "memory.max", tmp_path / "memory" / "memory.limit_in_bytes")) == limit


@pytest.mark.parametrize(
    ("files", "cores"),
    [
        ({"cpu.max": "max 100000\n"}, None),
        ({"cpu.max": "150000 100000\n"}, 2),
        ({"cpu.max": "50000 100000\n"}, 1),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({"cpu/cpu.cfs_quota_us": "300000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 3),
        ({}, None),
    ],
)
def test_the_cgroup_cpu_quota_in_whole_cores(tmp_path: Path, files: dict[str, str], cores: int | None) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert cpu_limit_cores(tmp_path) == cores


def test_a_memory_limit_too_small_stops_the_service_with_one_line() -> None:
    env = {k: v for k, v in os.environ.items() if k not in env_names(VisionEnv) | env_names(HttpEnv)}
    env |= {
        "PYTHONPATH": os.pathsep.join(str(ROOT / d) for d in ("contract", "workloads")),
        VisionEnv.MEMORY_LIMIT_BYTES: str(200 * MIB),
        VisionEnv.PORT: "1",
    }
    done = subprocess.run(
        [sys.executable, "-m", "korall_workloads.vision"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("korall vision: invalid configuration: the limits cannot fit in the memory limit")
    assert "limit 200 MiB" in line
