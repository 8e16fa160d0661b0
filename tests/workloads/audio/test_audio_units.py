"""The pure parts on plain arrays: features, the ring buffer, the event detector's hysteresis rules."""

from __future__ import annotations

import itertools
import threading
import time

import numpy as np
import pytest
from korall_workloads.audio.events import DetectorConfig, EventDetector
from korall_workloads.audio.features import FLOOR_DBFS, chunk_features, frame_dbfs, to_dbfs, to_mono
from korall_workloads.audio.resample import StreamResampler
from korall_workloads.audio.ringbuffer import RingBuffer

# -- features ------------------------------------------------------------------------------------------------


def test_features_of_a_sine_match_theory() -> None:
    rate, freq, amp = 16_000, 440.0, 0.5
    t = np.arange(rate) / rate
    f = chunk_features((amp * np.sin(2 * np.pi * freq * t)).astype(np.float32), 2.0, rate)
    assert f.rms == pytest.approx(amp / np.sqrt(2), rel=1e-3)
    assert f.dbfs == pytest.approx(20 * np.log10(amp / np.sqrt(2)), abs=0.01)  # -9.03 dBFS
    assert f.peak == pytest.approx(amp, rel=1e-3)
    assert f.zcr == pytest.approx(2 * freq / rate, rel=0.01)  # two crossings per period
    assert (f.start_s, f.end_s) == (2.0, 3.0)


def test_digital_silence_is_the_floor_not_minus_infinity() -> None:
    f = chunk_features(np.zeros(1600, dtype=np.float32), 0.0, 16_000)
    assert (f.rms, f.dbfs, f.peak, f.zcr) == (0.0, FLOOR_DBFS, 0.0, 0.0)
    assert float(to_dbfs(1.0)) == 0.0
    assert frame_dbfs(np.full((2, 4), 0.1, dtype=np.float32)).tolist() == pytest.approx([-20.0, -20.0])


def test_white_noise_crosses_zero_about_every_other_sample() -> None:
    x = np.random.default_rng(1).standard_normal(16_000).astype(np.float32)
    assert chunk_features(x, 0.0, 16_000).zcr == pytest.approx(0.5, abs=0.02)


def test_mono_mixdown() -> None:
    stereo = np.array([[1.0, 0.0], [0.5, 0.5], [0.0, -1.0]], dtype=np.float32)
    assert to_mono(stereo).tolist() == [0.5, 0.5, -0.5]


def test_decimation_by_a_whole_factor_averages_groups_across_blocks() -> None:
    r = StreamResampler(48_000, 16_000)
    out = np.concatenate([r.process(np.arange(0, 4, dtype=np.float32)), r.process(np.arange(4, 9, dtype=np.float32))])
    assert out.tolist() == [1.0, 4.0, 7.0]


@pytest.mark.parametrize("rate", [8_000, 22_050, 32_000, 44_100, 48_000])
def test_resampling_to_16k_keeps_length_pitch_and_level_in_any_blocks(rate: int) -> None:
    t = np.arange(3 * rate) / rate
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    whole = StreamResampler(rate, 16_000).process(tone)
    streamed = StreamResampler(rate, 16_000)
    sizes = np.random.default_rng(rate).integers(1, 4000, size=200)
    edges = np.minimum(np.concatenate([[0], np.cumsum(sizes)]), tone.size)
    parts = [streamed.process(tone[a:b]) for a, b in itertools.pairwise(edges)]
    pieces = np.concatenate(parts)
    assert abs(whole.size - 48_000) <= 1
    assert pieces.size == whole.size and np.allclose(pieces, whole, atol=1e-6)  # no seams between blocks
    f = chunk_features(whole, 0.0, 16_000)
    assert f.zcr * 16_000 / 2 == pytest.approx(440, rel=0.01)
    assert f.dbfs == pytest.approx(-9.03, abs=0.1)  # 440 Hz passes the low-pass untouched


# -- ring buffer ---------------------------------------------------------------------------------------------


def test_ring_buffer_wraps_around_in_order() -> None:
    ring = RingBuffer(10, 1)
    out = []
    for i in range(0, 40, 4):
        assert ring.write(np.arange(i, i + 4, dtype=np.float32).reshape(-1, 1)) == 4
        block = ring.read(4, timeout=0.1)
        assert block is not None
        out.extend(block[:, 0].tolist())
    assert out == list(range(40))
    assert ring.overflows == 0


def test_ring_buffer_drops_and_counts_instead_of_blocking() -> None:
    ring = RingBuffer(10, 2)
    began = time.monotonic()
    assert ring.write(np.ones((8, 2), dtype=np.float32)) == 8
    assert ring.write(np.ones((8, 2), dtype=np.float32)) == 2  # only the room left
    assert ring.write(np.ones((8, 2), dtype=np.float32)) == 0
    assert time.monotonic() - began < 0.05
    assert (ring.overflows, ring.dropped_samples) == (2, 14)


def test_ring_buffer_read_times_out_then_drains_after_close() -> None:
    ring = RingBuffer(100, 1)
    ring.write(np.ones((5, 1), dtype=np.float32))
    assert ring.read(10, timeout=0.05) is None
    ring.close()
    block = ring.read(10, timeout=5)
    assert block is not None and block.shape == (5, 1)
    empty = ring.read(10, timeout=5)
    assert empty is not None and empty.shape == (0, 1)


def test_ring_buffer_between_two_threads_loses_nothing() -> None:
    ring = RingBuffer(256, 1)
    total = 50_000
    received: list[np.ndarray] = []

    def consume() -> None:
        got = 0
        while got < total:
            block = ring.read(min(100, total - got), timeout=5)
            assert block is not None
            received.append(block[:, 0].copy())
            got += len(block)

    consumer = threading.Thread(target=consume)
    consumer.start()
    sent = 0
    while sent < total:
        n = min(64, total - sent)
        if ring.free >= n:
            ring.write(np.arange(sent, sent + n, dtype=np.float32).reshape(-1, 1))
            sent += n
    consumer.join(10)
    assert np.array_equal(np.concatenate(received), np.arange(total, dtype=np.float32))


# -- event detector ------------------------------------------------------------------------------------------

FRAME = 0.032
CFG = DetectorConfig(frame_s=FRAME)


def frames(seconds: float) -> int:
    return round(seconds / FRAME)


def run(levels: list[tuple[float, float, float]]) -> list[tuple[str, float, float]]:
    """(seconds, dBFS, speech probability) runs -> closed events as (type, start, end)."""
    det = EventDetector(CFG)
    db = np.concatenate([np.full(frames(s), lvl) for s, lvl, _ in levels])
    prob = np.concatenate([np.full(frames(s), p) for s, _, p in levels])
    events = det.push(db, prob) + det.flush()
    return [(e.type, round(e.start_s, 3), round(e.end_s, 3)) for e in events]


def test_pauses_between_words_stay_inside_one_utterance() -> None:
    words = []
    for _ in range(4):
        words += [(0.384, -20.0, 0.9), (0.192, -70.0, 0.05)]  # 192 ms pauses, shorter than the 0.3 s hangover
    got = run([(1.024, -90.0, 0.0), *words, (1.024, -90.0, 0.0)])
    assert [g[0] for g in got] == ["silence", "speech", "silence"]
    assert got[1][1] == pytest.approx(1.024)
    assert got[1][2] == pytest.approx(1.024 + 4 * 0.576 - 0.192)  # ends where the last word ends


def test_a_long_pause_splits_two_utterances() -> None:
    got = run([(0.64, -20.0, 0.9), (0.8, -90.0, 0.0), (0.64, -20.0, 0.9)])
    assert [g[0] for g in got] == ["speech", "silence", "speech"]


def test_a_short_blip_of_speech_probability_is_dropped() -> None:
    got = run([(0.96, -90.0, 0.0), (0.128, -30.0, 0.9), (0.96, -90.0, 0.0)])
    assert "speech" not in [g[0] for g in got]


def test_probability_between_release_and_threshold_keeps_speech_open() -> None:
    got = run([(0.64, -20.0, 0.9), (0.64, -25.0, 0.4), (0.64, -20.0, 0.9), (0.64, -90.0, 0.0)])
    assert [g[0] for g in got] == ["speech", "silence"]
    assert got[0][1:] == (0.0, pytest.approx(1.92))


def test_a_bang_with_a_ragged_tail_is_one_loud_event() -> None:
    bang = [(0.096, -8.0, 0.0), (0.064, -40.0, 0.0), (0.096, -9.0, 0.0), (0.032, -25.0, 0.0)]
    got = run([(1.28, -90.0, 0.0), *bang, (1.28, -90.0, 0.0)])
    assert [g[0] for g in got] == ["silence", "loud_noise", "silence"]
    assert got[1][1] == pytest.approx(1.28)
    assert got[1][2] == pytest.approx(1.28 + 0.288)  # -25 dBFS is still loud: release is 6 dB under -50+25


def test_loud_by_jump_over_a_noisy_background() -> None:
    """At -40 dBFS room noise a -12 dBFS knock is loud (a 28 dB jump), though below the absolute -6 dBFS."""
    got = run([(3.2, -40.0, 0.0), (0.32, -12.0, 0.0), (1.6, -40.0, 0.0)])
    assert got == [("loud_noise", 3.2, pytest.approx(3.52))]


def test_over_the_absolute_threshold_is_loud_even_if_it_is_speech() -> None:
    got = run([(0.96, -90.0, 0.0), (0.64, -3.0, 0.95), (0.96, -90.0, 0.0)])
    assert sorted(g[0] for g in got) == ["loud_noise", "silence", "silence", "speech"]


def test_a_voice_onset_before_the_vad_confirms_is_not_a_bang() -> None:
    """The first frames of speech jump over the silence floor before the VAD's probability rises."""
    got = run([(0.96, -90.0, 0.0), (0.064, -18.0, 0.1), (0.64, -18.0, 0.9), (0.96, -90.0, 0.0)])
    assert [g[0] for g in got] == ["silence", "speech", "silence"]


def test_silence_shorter_than_half_a_second_is_not_an_event() -> None:
    got = run([(0.64, -20.0, 0.9), (0.448, -90.0, 0.0), (0.64, -35.0, 0.0)])
    assert got == [("speech", 0.0, 0.64)]


def test_levels_and_probabilities_must_pair_up() -> None:
    with pytest.raises(ValueError, match="levels but"):
        EventDetector(CFG).push(np.zeros(3), np.zeros(2))
