"""The contract between the korall operator and its workloads.

The operator turns CRD fields into environment variables on the pods it builds; the workloads read the
same variables through their settings. Both sides import the names from here and from nowhere else, so a
rename is one edit and neither side ever imports the other. Keep this module free of third-party imports:
it ships in all three images.
"""

from __future__ import annotations

from typing import Final

API_GROUP: Final = "korall.io"
API_VERSION: Final = "v1alpha1"

VISION_PORT: Final = 5052
AUDIO_PORT: Final = 5053

MODELS_DIR_IN_IMAGE: Final = "/models"
"""Where the vision image keeps its bundled models; an InferenceModel's `model.file` is a name in here."""

DEFAULT_TPU_RESOURCE: Final = "coral.ai/tpu"
"""The extended resource a Coral device plugin advertises; pods that want a TPU request one of it."""

FETCH_MODULE: Final = "korall_workloads.fetch"
"""The model downloader in the vision image: the init container runs `python -m korall_workloads.fetch`."""

DEFAULT_MODEL_CACHE_DIR: Final = "/var/lib/korall/models"
"""Node-local, content-addressed model cache; a model lives at `<dir>/sha256/<hex digest>`."""

MODEL_DOWNLOAD_FAILED: Final = "ModelDownloadFailed"
"""First word of the downloader's termination message on failure: `ModelDownloadFailed: <Reason>: <detail>`,
one line; <Reason> is one CamelCase word (ChecksumMismatch, LinkExpired, NotFound, ...; docs/model-delivery.md)."""

MODEL_FETCHED: Final = "ModelFetched"
"""First word of the downloader's termination message on success: `ModelFetched: sha256:<hex> <n> bytes (...)`."""


class ServiceEnv:
    """Environment variables every workload service reads the same way."""

    HOST: Final = "HOST"
    PORT: Final = "PORT"
    LOG_JSON: Final = "LOG_JSON"
    LOG_LEVEL: Final = "LOG_LEVEL"


class VisionEnv(ServiceEnv):
    """Environment variables of the vision workload (set by the operator from InferenceModel/CaptureProfile)."""

    MODEL_PATH: Final = "MODEL_PATH"
    LABELS_PATH: Final = "LABELS_PATH"
    SCORE_TH: Final = "SCORE_TH"
    TOPK: Final = "TOPK"
    MODELS_DIR: Final = "MODELS_DIR"
    ACCELERATOR: Final = "ACCELERATOR"  # auto | edgetpu | cpu
    EDGETPU_DEVICE: Final = "EDGETPU_DEVICE"  # usb | pci
    MODEL_SHA256: Final = "MODEL_SHA256"  # optional expected checksum, refused on mismatch
    NUM_THREADS: Final = "NUM_THREADS"
    INFER_TIMEOUT_S: Final = "INFER_TIMEOUT_S"
    MAX_UPLOAD_BYTES: Final = "MAX_UPLOAD_BYTES"
    MAX_IMAGE_PIXELS: Final = "MAX_IMAGE_PIXELS"

    # Camera ingest (from a video CaptureProfile); no CAPTURE_SOURCE means no camera loop.
    CAPTURE_SOURCE: Final = "CAPTURE_SOURCE"  # /dev/video0, 0, a GStreamer pipeline, rtsp://, http://, a file
    CAPTURE_WIDTH: Final = "CAPTURE_WIDTH"
    CAPTURE_HEIGHT: Final = "CAPTURE_HEIGHT"
    CAPTURE_FPS: Final = "CAPTURE_FPS"
    CAPTURE_PIXEL_FORMAT: Final = "CAPTURE_PIXEL_FORMAT"  # MJPG | YUYV
    CAPTURE_SAMPLE_EVERY: Final = "CAPTURE_SAMPLE_EVERY"  # infer on every Nth frame
    CAPTURE_BUFFER_FRAMES: Final = "CAPTURE_BUFFER_FRAMES"
    CAPTURE_LOOP: Final = "CAPTURE_LOOP"  # video files: rewind at the end instead of reconnecting
    CAPTURE_STALL_TIMEOUT_S: Final = "CAPTURE_STALL_TIMEOUT_S"  # no frame for this long = stalled
    CAPTURE_RECONNECT_MIN_S: Final = "CAPTURE_RECONNECT_MIN_S"  # first reconnect delay, doubled per failure
    CAPTURE_RECONNECT_MAX_S: Final = "CAPTURE_RECONNECT_MAX_S"  # cap of the reconnect delay
    CAPTURE_MAX_RECONNECTS: Final = "CAPTURE_MAX_RECONNECTS"  # consecutive failures before "failed"; 0 = never
    CAPTURE_MOTION_MIN_CHANGE: Final = "CAPTURE_MOTION_MIN_CHANGE"  # skip inference below this changed share; 0 off
    CAPTURE_MOTION_MAX_SKIP_S: Final = "CAPTURE_MOTION_MAX_SKIP_S"  # infer at least this often even without motion


class AudioEnv(ServiceEnv):
    """Environment variables of the audio workload (set by the operator from an audio CaptureProfile)."""

    AUDIO_SOURCE: Final = "AUDIO_SOURCE"  # a sounddevice name or index (e.g. hw:1,0) or a path to a WAV file
    AUDIO_SAMPLE_RATE: Final = "AUDIO_SAMPLE_RATE"
    AUDIO_CHANNELS: Final = "AUDIO_CHANNELS"
    AUDIO_CHUNK_S: Final = "AUDIO_CHUNK_S"
    AUDIO_OVERLAP_S: Final = "AUDIO_OVERLAP_S"
    AUDIO_SILENCE_DBFS: Final = "AUDIO_SILENCE_DBFS"
    AUDIO_LOUD_DBFS: Final = "AUDIO_LOUD_DBFS"
    AUDIO_LOUD_JUMP_DB: Final = "AUDIO_LOUD_JUMP_DB"  # a jump this far over the running background is loud too
    AUDIO_VAD_THRESHOLD: Final = "AUDIO_VAD_THRESHOLD"  # speech probability (0..1) per VAD frame
    AUDIO_REALTIME: Final = "AUDIO_REALTIME"  # pace a WAV source in real time (true) or read it at full speed
    AUDIO_RETRY_MAX_S: Final = "AUDIO_RETRY_MAX_S"  # longest wait between attempts to open the device


class FetchEnv:
    """Environment variables of the model downloader (`python -m korall_workloads.fetch`, an init container).

    MODEL_SHA256 is the same variable the vision service reads: the operator sets one value on both containers.
    """

    MODEL_SHA256: Final = "MODEL_SHA256"  # required: the file is refused unless it hashes to this
    MODEL_URL_FILE: Final = "MODEL_URL_FILE"  # a file holding the (presigned) link: the link Secret, mounted
    MODEL_URL: Final = "MODEL_URL"  # the link itself, when no MODEL_URL_FILE is given
    MODEL_HEADERS_FILE: Final = "MODEL_HEADERS_FILE"  # optional `Name: value` lines sent with the request (auth)
    MODEL_CACHE_DIR: Final = "MODEL_CACHE_DIR"  # cache root; the model lands in <dir>/sha256/<hex>
    MODEL_MAX_BYTES: Final = "MODEL_MAX_BYTES"  # a larger file is refused before or while it streams
    MODEL_FETCH_ATTEMPTS: Final = "MODEL_FETCH_ATTEMPTS"  # consecutive failed attempts before giving up
    MODEL_FETCH_BACKOFF_MIN_S: Final = "MODEL_FETCH_BACKOFF_MIN_S"  # first retry delay, doubled per failure
    MODEL_FETCH_BACKOFF_MAX_S: Final = "MODEL_FETCH_BACKOFF_MAX_S"  # cap of the retry delay
    MODEL_FETCH_TIMEOUT_S: Final = "MODEL_FETCH_TIMEOUT_S"  # connect timeout and longest silence of a read
    MODEL_FETCH_LOCK_TIMEOUT_S: Final = "MODEL_FETCH_LOCK_TIMEOUT_S"  # longest wait for another download of it
    TERMINATION_MESSAGE_PATH: Final = "TERMINATION_MESSAGE_PATH"  # where the one-line outcome goes (Kubernetes)
    LOG_JSON: Final = ServiceEnv.LOG_JSON
    LOG_LEVEL: Final = ServiceEnv.LOG_LEVEL


class EventsEnv:
    """Environment variables of event delivery over MQTT, read the same way by the vision and audio workloads.

    No EVENTS_MQTT_URL means no delivery (no spool, no connection). The operator is to set the source identity
    (namespace, CR name, node through the Downward API), the broker and its Secret, and mount the spool folder.
    Ranges and defaults: `korall_workloads.common.event_settings.EventsSettings`.
    """

    MQTT_URL: Final = "EVENTS_MQTT_URL"  # mqtt://host[:port] or mqtts://host[:port] (TLS); unset: delivery off
    MQTT_USERNAME: Final = "EVENTS_MQTT_USERNAME"  # from a Secret
    MQTT_PASSWORD: Final = "EVENTS_MQTT_PASSWORD"  # from a Secret
    MQTT_TLS_CA_FILE: Final = "EVENTS_MQTT_TLS_CA_FILE"  # PEM bundle that signs the broker's certificate
    MQTT_TLS_CERT_FILE: Final = "EVENTS_MQTT_TLS_CERT_FILE"  # client certificate (PEM), optional
    MQTT_TLS_KEY_FILE: Final = "EVENTS_MQTT_TLS_KEY_FILE"  # its private key (PEM)
    MQTT_TLS_INSECURE: Final = "EVENTS_MQTT_TLS_INSECURE"  # skip the host name check (tests only)
    MQTT_VERSION: Final = "EVENTS_MQTT_VERSION"  # 5 | 3.1.1
    QOS: Final = "EVENTS_QOS"  # 1 | 2
    TOPIC_PREFIX: Final = "EVENTS_TOPIC_PREFIX"  # topics: <prefix>/<namespace>/<name>/{events,availability,heartbeat}
    KEEPALIVE_S: Final = "EVENTS_KEEPALIVE_S"
    HEARTBEAT_S: Final = "EVENTS_HEARTBEAT_S"
    RECONNECT_MIN_S: Final = "EVENTS_RECONNECT_MIN_S"
    RECONNECT_MAX_S: Final = "EVENTS_RECONNECT_MAX_S"
    MAX_INFLIGHT: Final = "EVENTS_MAX_INFLIGHT"  # publishes awaiting their PUBACK at once
    SPOOL_DIR: Final = "EVENTS_SPOOL_DIR"  # the operator mounts a hostPath (or an emptyDir) here
    SPOOL_MAX_EVENTS: Final = "EVENTS_SPOOL_MAX_EVENTS"
    SPOOL_MAX_BYTES: Final = "EVENTS_SPOOL_MAX_BYTES"
    SPOOL_MAX_AGE_S: Final = "EVENTS_SPOOL_MAX_AGE_S"
    SOURCE_NAMESPACE: Final = "EVENTS_SOURCE_NAMESPACE"  # the CR's namespace (Downward API metadata.namespace)
    SOURCE_NAME: Final = "EVENTS_SOURCE_NAME"  # the InferenceModel's or CaptureProfile's name
    SOURCE_NODE: Final = "EVENTS_SOURCE_NODE"  # Downward API spec.nodeName
    OBJECT_END_AFTER_S: Final = "EVENTS_OBJECT_END_AFTER_S"  # vision: a label absent this long ends its event
    OBJECT_UPDATE_INTERVAL_S: Final = "EVENTS_OBJECT_UPDATE_INTERVAL_S"  # vision: at most one update per label per
    OBJECT_LABELS: Final = "EVENTS_OBJECT_LABELS"  # vision: comma-separated labels to report; empty: all


SPOOL_DIR_IN_POD: Final = "/var/lib/korall/spool"
"""Where the workloads keep their event spool by default; the operator mounts the node's spool folder here."""


def env_names(env_class: type) -> frozenset[str]:
    """Every variable name an *Env class declares, inherited ones (ServiceEnv's) included."""
    return frozenset(getattr(env_class, key) for key in dir(env_class) if key.isupper())
