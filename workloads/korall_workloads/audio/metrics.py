"""Prometheus metrics of the audio service, on a registry of their own per app (tests build many apps)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from korall_workloads.audio.events import EVENT_TYPES


class AudioMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.chunks = Counter("korall_audio_chunks_total", "Chunks processed.", registry=r)
        self.events = Counter("korall_audio_events_total", "Events emitted, by type.", ["type"], registry=r)
        for kind in EVENT_TYPES:
            self.events.labels(kind)
        self.overflows = Counter(
            "korall_audio_overflows_total",
            "Audio lost to overruns: where=ring (processing fell behind) or portaudio (the driver's input_overflow).",
            ["where"],
            registry=r,
        )
        for where in ("ring", "portaudio"):
            self.overflows.labels(where)
        self.processing = Histogram(
            "korall_audio_chunk_processing_seconds",
            "Processing time per chunk (features, VAD, events).",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=r,
        )
        self.level = Gauge("korall_audio_level_dbfs", "Level of the last chunk (dBFS).", registry=r)
        self.capturing = Gauge("korall_audio_capturing", "1 while the source delivers audio, else 0.", registry=r)
        self.source_errors = Counter(
            "korall_audio_source_errors_total", "Failed attempts to open or keep the audio source.", registry=r
        )
        self.sse_dropped = Counter(
            "korall_audio_sse_dropped_total", "Live events dropped for slow stream clients.", registry=r
        )
        self.http_errors = Counter("korall_audio_http_errors_total", "Error responses, by code.", ["code"], registry=r)
