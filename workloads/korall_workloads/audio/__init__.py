"""The audio workload: capture (a microphone through sounddevice, or a WAV file), 1-2 s chunks with energy
features, and silence / speech / loud-noise events served over HTTP.

Layout, from the device up:
- `device.py` owns PortAudio (sounddevice) and `wavfile.py` replays a WAV file; both only write into a
  `ringbuffer.RingBuffer`, so everything after it is one code path.
- `features.py` (pure numpy), `vad.py` (silero VAD through onnxruntime) and `events.py` (a pure state machine with
  hysteresis) turn samples into events; `pipeline.py` chains them per chunk.
- `capture.py` supervises the source (open, retry with backoff, health state) and runs the pipeline thread.
- `hub.py` keeps recent events and feeds live subscribers; `metrics.py` and `app.py` expose them over HTTP.
"""
