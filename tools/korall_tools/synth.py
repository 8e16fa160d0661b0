"""Test signals with known ground truth: real speech from espeak-ng, noise from sox, mixed in numpy.

Used by the tests, the bench and the demo (`python -m korall_tools.synth demo.wav`), never by the
service itself. espeak-ng and sox are command-line tools (Debian packages `espeak-ng` and `sox`,
scripts/sysdeps.sh installs them); the audio image does not carry them.

A scene is a list of segments laid end to end; `build_scene` returns the 16 kHz mono samples and the truth: the
type, start and end (s) of every segment, with speech trimmed to where the voice really starts and stops.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from korall_workloads.audio.features import FloatArray
from korall_workloads.audio.wavfile import pcm_to_float

RATE = 16_000
SPEECH_PEAK = 0.5  # speech is normalised to this peak (-6 dBFS), a close-talking microphone level


def tools_missing() -> list[str]:
    return [tool for tool in ("espeak-ng", "sox") if shutil.which(tool) is None]


def read_wav(path: Path) -> tuple[FloatArray, int]:
    """Mono float32 samples and the rate of a PCM WAV file."""
    with wave.open(str(path), "rb") as wav:
        data = pcm_to_float(wav.readframes(wav.getnframes()), wav.getsampwidth(), wav.getnchannels())
        return data.mean(axis=1, dtype=np.float32), wav.getframerate()


def write_wav(path: Path, samples: FloatArray, rate: int = RATE) -> Path:
    """16-bit PCM mono WAV."""
    pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).round().astype("<i2")
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm.tobytes())
    return path


def speak(text: str, voice: str, workdir: Path) -> FloatArray:
    """`text` spoken by espeak-ng `voice`, resampled by sox to 16 kHz mono, trimmed to the voice, peak 0.5."""
    raw = workdir / "espeak.wav"
    out = workdir / "speech16k.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(raw), text], check=True, capture_output=True)
    # 3 dB of headroom so that resampling never clips (the peak is normalised below anyway).
    subprocess.run(["sox", "-v", "0.7", str(raw), "-r", str(RATE), "-c", "1", "-b", "16", str(out)], check=True)
    samples, _ = read_wav(out)
    loud = np.flatnonzero(np.abs(samples) > 0.02 * np.max(np.abs(samples)))
    voiced = samples[loud[0] : loud[-1] + 1]
    return (voiced * (SPEECH_PEAK / np.max(np.abs(voiced)))).astype(np.float32)


def sox_noise(seconds: float, workdir: Path, kind: str = "whitenoise", volume: float = 0.9) -> FloatArray:
    """`sox -n out.wav synth SECONDS KIND vol VOLUME` at 16 kHz mono."""
    out = workdir / f"{kind}.wav"
    command = ["sox", "-r", str(RATE), "-n", "-c", "1", "-b", "16", str(out)]
    subprocess.run([*command, "synth", f"{seconds}", kind, "vol", f"{volume}"], check=True)
    return read_wav(out)[0]


def rms(x: FloatArray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def noise_gain_for_snr(signal_rms: float, noise: FloatArray, snr_db: float) -> float:
    """The factor that puts `noise` `snr_db` below `signal_rms`: 20*log10(signal_rms / (gain*rms(noise))) = snr_db."""
    return signal_rms / (rms(noise) * 10 ** (snr_db / 20.0))


@dataclass(frozen=True)
class Segment:
    kind: str  # silence | speech | loud_noise
    seconds: float = 0.0  # silence and loud_noise
    text: str = ""  # speech
    voice: str = "en"


@dataclass(frozen=True)
class TruthEvent:
    type: str
    start_s: float
    end_s: float


@dataclass(frozen=True)
class Scene:
    samples: FloatArray
    truth: list[TruthEvent]
    speech_rms: float

    @property
    def seconds(self) -> float:
        return self.samples.size / RATE


def build_scene(segments: list[Segment], workdir: Path) -> Scene:
    """Lay the segments end to end (silence is digital zero) and record where each one is."""
    parts: list[FloatArray] = []
    truth: list[TruthEvent] = []
    speech: list[FloatArray] = []
    at = 0
    for seg in segments:
        if seg.kind == "silence":
            part = np.zeros(round(seg.seconds * RATE), dtype=np.float32)
        elif seg.kind == "speech":
            part = speak(seg.text, seg.voice, workdir)
            speech.append(part)
        elif seg.kind == "loud_noise":
            part = sox_noise(seg.seconds, workdir)
        else:
            raise ValueError(f"unknown segment kind {seg.kind!r}")
        truth.append(TruthEvent(seg.kind, at / RATE, (at + part.size) / RATE))
        parts.append(part)
        at += part.size
    speech_rms = rms(np.concatenate(speech)) if speech else 0.0
    return Scene(np.concatenate(parts).astype(np.float32), truth, speech_rms)


def add_background(scene: Scene, snr_db: float, workdir: Path, kind: str = "whitenoise") -> Scene:
    """The scene with sox noise under it, `snr_db` below the RMS of its speech (sox's noise, our gain)."""
    if scene.speech_rms <= 0:
        raise ValueError("the scene has no speech to set an SNR against")
    noise = sox_noise(scene.seconds + 0.1, workdir, kind)[: scene.samples.size]
    gain = noise_gain_for_snr(scene.speech_rms, noise, snr_db)
    mixed = np.clip(scene.samples + gain * noise, -1.0, 1.0).astype(np.float32)
    truth = [t for t in scene.truth if t.type != "silence"]  # nothing is silent under background noise
    return Scene(mixed, truth, scene.speech_rms)


DEMO = [
    Segment("silence", 1.5),
    Segment("speech", text="Hello, this is the korall audio demo. Turn off the lights please.", voice="en"),
    Segment("silence", 1.5),
    Segment("loud_noise", 0.5),
    Segment("silence", 1.5),
    Segment("speech", text="Guten Morgen, das ist ein Test.", voice="de"),
    Segment("silence", 1.5),
]


def main(argv: list[str]) -> int:
    """`python -m korall_tools.synth OUT.wav`: write the demo scene and print its truth."""
    if len(argv) != 1:
        print("usage: python -m korall_tools.synth OUT.wav", file=sys.stderr)
        return 2
    missing = tools_missing()
    if missing:
        print(f"missing tools: {', '.join(missing)} (apt-get install espeak-ng sox)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        scene = build_scene(DEMO, Path(tmp))
    path = write_wav(Path(argv[0]), scene.samples)
    print(f"wrote {path} ({scene.seconds:.1f} s, 16 kHz mono); expected events:")
    for t in scene.truth:
        print(f"  {t.type:<10} {t.start_s:6.2f} - {t.end_s:6.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
