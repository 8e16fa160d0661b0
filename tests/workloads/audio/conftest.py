"""Real speech for the audio tests: scenes made once per session with espeak-ng and sox (scripts/sysdeps.sh).

Each scene is written to a WAV file and comes with its ground truth (`korall_tools.synth`). The service
reads those files unpaced (AUDIO_REALTIME=false), so the whole set runs much faster than real time.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from korall_tools.synth import Scene, Segment, add_background, build_scene, tools_missing, write_wav

SCENE = [
    Segment("silence", 1.5),
    Segment("speech", text="Please turn off the lights in the kitchen.", voice="en"),
    Segment("silence", 1.5),
    Segment("loud_noise", 0.5),
    Segment("silence", 1.5),
]


@pytest.fixture(scope="session")
def audio_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    missing = tools_missing()
    if missing:
        pytest.fail(f"{', '.join(missing)} not installed: run `make sysdeps` (scripts/sysdeps.sh)")
    return tmp_path_factory.mktemp("audio")


@pytest.fixture(scope="session")
def make_scene(audio_dir: Path) -> Callable[..., tuple[Path, Scene]]:
    """Build (and cache by name) a scene WAV; `snr_db` adds sox white noise under it at that SNR."""
    cache: dict[str, tuple[Path, Scene]] = {}

    def make(name: str, segments: list[Segment], snr_db: float | None = None) -> tuple[Path, Scene]:
        if name not in cache:
            work = audio_dir / f"work-{name}"
            work.mkdir()
            scene = build_scene(segments, work)
            if snr_db is not None:
                scene = add_background(scene, snr_db, work)
            cache[name] = (write_wav(audio_dir / f"{name}.wav", scene.samples), scene)
        return cache[name]

    return make


@pytest.fixture(scope="session")
def scene_wav(make_scene: Callable[..., tuple[Path, Scene]]) -> tuple[Path, Scene]:
    """silence 1.5 s, an English sentence, silence 1.5 s, a 0.5 s white-noise burst from sox, silence 1.5 s."""
    return make_scene("scene", SCENE)
