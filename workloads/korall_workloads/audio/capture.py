"""The capture loop: open the source, pump its ring buffer through the pipeline, and recover from failures.

One thread does it all after the ring buffer (the producer is PortAudio's callback or the WAV thread). A source
that cannot be opened or that dies puts the service in the `error` state with the reason, visible in /health and
the log, and is retried with doubling backoff (0.5 s up to AUDIO_RETRY_MAX_S); the HTTP side stays up throughout.
The wait starts over at 0.5 s only after a source ran for STABLE_S before failing: one that opens and dies at once,
again and again, is retried ever more slowly, as a failure to open is.
A WAV source that reaches its end closes the open events and leaves the service `finished`, still serving them;
a WAV file cut short ends the same way, once, with a `warning` that says where it ended.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from korall_workloads.audio.device import DeviceSource
from korall_workloads.audio.hub import EventHub
from korall_workloads.audio.metrics import AudioMetrics
from korall_workloads.audio.pipeline import ChunkPipeline, ChunkResult
from korall_workloads.audio.ringbuffer import RingBuffer
from korall_workloads.audio.settings import AudioSettings
from korall_workloads.audio.source import AudioSource, SourceError
from korall_workloads.audio.vad import SileroVad, SpeechDetector
from korall_workloads.audio.wavfile import WavSource
from korall_workloads.common.errors import Unavailable

log = logging.getLogger("korall.audio")

RING_SECONDS = 10.0
"""Audio the ring buffer holds: room for the processing thread to stall for seconds without losing samples."""

BACKOFF_START_S = 0.5

STABLE_S = 10.0
"""A source that delivered audio this long before it failed is retried from BACKOFF_START_S again."""


class CaptureNotReady(Unavailable):
    """No audio flows yet (starting, or the source fails), or the service is stopping."""


class CaptureState(enum.StrEnum):
    STARTING = "starting"
    CAPTURING = "capturing"
    ERROR = "error"
    FINISHED = "finished"
    STOPPED = "stopped"


def default_source(settings: AudioSettings) -> AudioSource:
    """A WAV replay when AUDIO_SOURCE names a .wav file, else a sounddevice input."""
    if settings.wav_path is not None:
        return WavSource(settings.wav_path, realtime=settings.realtime)
    return DeviceSource(settings.source, settings.sample_rate, settings.channels)


class CaptureService:
    """Owns the capture thread and the health state that /health and /ready report."""

    def __init__(
        self,
        settings: AudioSettings,
        hub: EventHub,
        metrics: AudioMetrics,
        *,
        source_factory: Callable[[AudioSettings], AudioSource] = default_source,
        vad_factory: Callable[[], SpeechDetector] = SileroVad,
    ) -> None:
        self.settings = settings
        self.hub = hub
        self.metrics = metrics
        self._source_factory = source_factory
        self._vad_factory = vad_factory
        self._stop = threading.Event()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.state = CaptureState.STARTING
        self.error: str | None = None
        self.warning: str | None = None
        self.source_description: str | None = None
        self.attempts = 0
        self.next_retry_s: float | None = None
        self.chunks = 0
        self.ring_overflows = 0
        self.source_overflows = 0
        self.last_level_dbfs: float | None = None
        self.audio_s = 0.0
        self._ring_seen = 0
        self._src_seen = 0

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="audio-capture", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self.state not in (CaptureState.FINISHED, CaptureState.ERROR):
            self._set_state(CaptureState.STOPPED)

    def wait_done(self, timeout: float) -> bool:
        """Wait until a finite source (a WAV file) has been fully processed."""
        return self._done.wait(timeout)

    def require_ready(self) -> dict[str, Any]:
        """The status while audio flows or a WAV replay has been processed; else CaptureNotReady, saying why."""
        status = self.status()
        if self.state not in (CaptureState.CAPTURING, CaptureState.FINISHED):
            why = f": {status['error']}" if status["error"] else ""
            raise CaptureNotReady(f"audio source {status['state']}{why}")
        return status

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {
                "state": self.state.value,
                "source": self.settings.source,
                "source_description": self.source_description,
                "error": self.error,
                "warning": self.warning,
                "attempts": self.attempts,
                "next_retry_s": self.next_retry_s,
                "chunks": self.chunks,
                "audio_s": round(self.audio_s, 3),
                "overflows": {"ring": self.ring_overflows, "portaudio": self.source_overflows},
                "level_dbfs": self.last_level_dbfs,
                "thresholds": {"silence_dbfs": self.settings.silence_dbfs, "loud_dbfs": self.settings.loud_dbfs},
            }

    def _set_state(self, state: CaptureState, error: str | None = None) -> None:
        with self._lock:
            self.state = state
            self.error = error
        self.metrics.capturing.set(1 if state is CaptureState.CAPTURING else 0)

    # -- the thread ------------------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            vad = self._vad_factory()
        except Exception as exc:  # a broken model file is not retried: it will not heal
            log.exception("cannot load the VAD model")
            self._set_state(CaptureState.ERROR, f"cannot load the VAD model: {exc}")
            self._done.set()
            return
        first_wait = min(BACKOFF_START_S, self.settings.retry_max_s)
        backoff = first_wait
        pipeline: ChunkPipeline | None = None
        while not self._stop.is_set():
            source = self._source_factory(self.settings)
            self.attempts += 1
            try:
                fmt = source.open()
                if pipeline is None or pipeline.sample_rate != fmt.sample_rate:
                    pipeline = ChunkPipeline(self.settings, fmt.sample_rate, vad)
                ring = RingBuffer(max(int(RING_SECONDS * fmt.sample_rate), 2 * pipeline.hop_frames), fmt.channels)
                source.start(ring)
            except Exception as exc:  # SourceError, or a surprise from the driver: both are retried
                source.close()
                if not isinstance(exc, SourceError):
                    log.exception("unexpected error opening the audio source")
                self._failed(str(exc) if isinstance(exc, SourceError) else f"{type(exc).__name__}: {exc}", backoff)
                if self._stop.wait(backoff):
                    break
                backoff = min(backoff * 2, self.settings.retry_max_s)
                continue
            with self._lock:
                self.source_description = fmt.description
                self.next_retry_s = None
            self._set_state(CaptureState.CAPTURING)
            log.info("capturing from %s", fmt.description)
            capturing_since = time.monotonic()
            try:
                outcome = self._pump(source, ring, pipeline)
            except Exception as exc:  # a bug or a broken VAD session must not leave /health saying "capturing"
                log.exception("audio processing failed")
                outcome = f"processing failed: {type(exc).__name__}: {exc}"
            source.close()
            if outcome is None:  # stopped or finished
                break
            for event in pipeline.interrupt():
                self._emit(event)
            if time.monotonic() - capturing_since >= STABLE_S:
                backoff = first_wait  # it worked for a while: this is a new failure, not the same one again
            self._failed(outcome, backoff)
            if self._stop.wait(backoff):
                break
            backoff = min(backoff * 2, self.settings.retry_max_s)
        self._done.set()

    def _failed(self, message: str, backoff: float) -> None:
        self.metrics.source_errors.inc()
        with self._lock:
            self.next_retry_s = backoff
        self._set_state(CaptureState.ERROR, message)
        log.error("audio source %r: %s (retrying in %g s)", self.settings.source, message, backoff)

    def _pump(self, source: AudioSource, ring: RingBuffer, pipeline: ChunkPipeline) -> str | None:
        """Process until stopped (None), the end of a finite source (None), or a failure (its message)."""
        self._ring_seen = self._src_seen = 0
        while not self._stop.is_set():
            block = ring.read(pipeline.hop_frames, timeout=0.5)
            self._account_overflows(ring, source)
            if block is None:
                problem = source.check()
                if problem:
                    rest = ring.read(ring.available, timeout=0)  # what arrived before the failure still counts
                    if rest is not None and len(rest):
                        self._handle(pipeline.process(rest))
                    return problem
                continue
            if len(block):
                self._handle(pipeline.process(block))
            if ring.closed and ring.available == 0:
                problem = source.check()
                if problem:
                    return problem
                for event in pipeline.finish():
                    self._emit(event)
                if early := source.ended_early():
                    with self._lock:
                        self.warning = early
                    log.warning("%s", early)
                self._set_state(CaptureState.FINISHED)
                log.info("end of %s after %.1f s of audio", self.source_description, self.audio_s)
                return None
        return None

    def _account_overflows(self, ring: RingBuffer, source: AudioSource) -> None:
        ring_new = ring.overflows - self._ring_seen
        src_new = source.overflows - self._src_seen
        self._ring_seen, self._src_seen = ring.overflows, source.overflows
        if ring_new:
            self.ring_overflows += ring_new
            self.metrics.overflows.labels("ring").inc(ring_new)
            log.warning("ring buffer overflow: %d blocks dropped (%d samples so far)", ring_new, ring.dropped_samples)
        if src_new:
            self.source_overflows += src_new
            self.metrics.overflows.labels("portaudio").inc(src_new)
            log.warning("PortAudio input overflow reported %d times", src_new)

    def _handle(self, result: ChunkResult) -> None:
        self.metrics.chunks.inc()
        self.metrics.processing.observe(result.processing_s)
        self.metrics.level.set(result.features.dbfs)
        with self._lock:
            self.chunks += 1
            self.audio_s += result.audio_s
            self.last_level_dbfs = round(result.features.dbfs, 2)
        self.hub.add_chunk(result.features, {**result.level(), "at": round(time.time(), 3)})
        for event in result.events:
            self._emit(event)

    def _emit(self, event: Any) -> None:
        record = self.hub.publish(event)
        self.metrics.events.labels(event.type).inc()
        log.info(
            "event %s %.2f-%.2f s (peak %.1f dBFS)",
            event.type,
            event.start_s,
            event.end_s,
            event.peak_dbfs,
            extra={"event": record},
        )
