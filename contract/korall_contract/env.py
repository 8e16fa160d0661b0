"""The environment variables of each workload: the names both sides use, and for those that carry a CRD field
what they may hold (`Setting`). A workload reads exactly the names of its class here (tests check it)."""

from __future__ import annotations

from typing import Final, Literal, get_args

from korall_contract.mqtt import BROKER_URL_PATTERN, TOPIC_PREFIX_PATTERN
from korall_contract.setting import Setting

# The choices of the variables that have them, as types both sides annotate their fields with.
Accelerator = Literal["auto", "edgetpu", "cpu"]
ScheduledAccelerator = Literal["edgetpu", "cpu"]  # what an InferenceModel may ask for
TpuInterface = Literal["usb", "pci"]
PixelFormat = Literal["MJPG", "YUYV"]
SampleRate = Literal[8000, 16000, 22050, 32000, 44100, 48000]
QoS = Literal[1, 2]

_EVENTS = ("InferenceModel:spec.events.mqtt", "CaptureProfile:spec.events.mqtt")


class ServiceEnv:
    """Environment variables every workload service reads the same way."""

    HOST: Final = "HOST"
    PORT: Final = "PORT"
    LOG_JSON: Final = "LOG_JSON"
    LOG_LEVEL: Final = "LOG_LEVEL"


class HttpEnv:
    """The HTTP side of both workload services: what one client may hold, tokens, rate limits, the access log.

    Ranges and defaults: `korall_workloads.common.http_settings.HttpSettings`; what each protects:
    docs/security.md. The operator sets AUTH_TOKENS_FILE (the token Secret, mounted) and AUTH_METRICS.
    """

    MAX_CONNECTIONS: Final = "HTTP_MAX_CONNECTIONS"  # open connections at once; more are refused with a JSON 503
    MAX_HEADER_BYTES: Final = "HTTP_MAX_HEADER_BYTES"  # request line + headers; larger: 431, connection closed
    HEADER_TIMEOUT_S: Final = "HTTP_HEADER_TIMEOUT_S"  # a request head (or a new connection's) must arrive within
    BODY_TIMEOUT_S: Final = "HTTP_BODY_TIMEOUT_S"  # a request body must arrive within; else 408
    SEND_TIMEOUT_S: Final = "HTTP_SEND_TIMEOUT_S"  # a client that reads nothing of a reply for this long is dropped
    KEEPALIVE_S: Final = "HTTP_KEEPALIVE_S"  # an idle keep-alive connection is closed after this long
    STREAMS_PER_CLIENT: Final = "HTTP_STREAMS_PER_CLIENT"  # live streams (SSE) one client address may hold
    ACCESS_LOG: Final = "HTTP_ACCESS_LOG"  # one JSON line per request (true/false)
    AUTH_TOKENS_FILE: Final = "AUTH_TOKENS_FILE"  # `name sha256:<hex> [scopes]` lines (the token Secret); unset: off
    AUTH_METRICS: Final = "AUTH_METRICS"  # true: /metrics needs a token with the metrics scope
    RATE_LIMIT_PER_CLIENT: Final = "RATE_LIMIT_PER_CLIENT"  # e.g. 100/second;3000/minute (limits' notation); empty off
    RATE_LIMIT_PER_TOKEN: Final = "RATE_LIMIT_PER_TOKEN"  # the same, per token name


class VisionEnv(ServiceEnv):
    """Environment variables of the vision workload (set by the operator from InferenceModel/CaptureProfile)."""

    MODEL_PATH: Final = "MODEL_PATH"
    LABELS_PATH: Final = "LABELS_PATH"
    SCORE_TH: Final = Setting(
        "SCORE_TH",
        float,
        default=0.5,
        minimum=0.0,
        maximum=1.0,
        crd="InferenceModel:spec.scoreThreshold",
        description="Minimum score of a detection, 0..1.",
    )
    TOPK: Final = Setting(
        "TOPK",
        int,
        default=10,
        minimum=1,
        maximum=100,
        crd="InferenceModel:spec.topK",
        description="Most detections returned (SSD MobileNet v2's postprocess op gives at most 20).",
    )
    MODELS_DIR: Final = "MODELS_DIR"
    ACCELERATOR: Final = Setting(
        "ACCELERATOR",
        default="auto",
        choices=get_args(Accelerator),
        crd="InferenceModel:spec.accelerator",
        crd_choices=get_args(ScheduledAccelerator),
        crd_default="cpu",
        description="edgetpu (pinned to a TPU node) or cpu. The service alone also takes auto: the Edge TPU if its "
        "delegate loads, else the CPU.",
    )
    EDGETPU_DEVICE: Final = Setting(
        "EDGETPU_DEVICE",
        default="usb",
        crd="InferenceModel:spec.tpuInterface",
        crd_choices=get_args(TpuInterface),
        crd_default=None,
        description="How the Edge TPU is attached: usb or pci (the service also takes usb:N, pci:N).",
    )
    MODEL_SHA256: Final = "MODEL_SHA256"  # optional expected checksum, refused on mismatch
    NUM_THREADS: Final = "NUM_THREADS"
    INFER_TIMEOUT_S: Final = "INFER_TIMEOUT_S"
    MAX_UPLOAD_BYTES: Final = "MAX_UPLOAD_BYTES"
    MAX_IMAGE_PIXELS: Final = "MAX_IMAGE_PIXELS"
    NUM_INTERPRETERS: Final = "NUM_INTERPRETERS"  # 0: one per core on the CPU, one per TPU on the Edge TPU
    INFER_QUEUE_MAX: Final = "INFER_QUEUE_MAX"  # /infer requests in progress at once; more: 503 overloaded
    UPLOAD_BUDGET_BYTES: Final = "UPLOAD_BUDGET_BYTES"  # request bodies held at once, in bytes; more: 503
    DECODE_BUDGET_BYTES: Final = "DECODE_BUDGET_BYTES"  # memory one image decode may take (from its header); 413
    DECODE_SERIAL_BYTES: Final = "DECODE_SERIAL_BYTES"  # decodes costing more than this run one at a time
    MEMORY_LIMIT_BYTES: Final = "MEMORY_LIMIT_BYTES"  # the container's limit (Downward API); checked at start
    SELF_TEST_GOLDEN_SET: Final = "SELF_TEST_GOLDEN_SET"  # a golden set (folder or archive) run before /ready is 200

    # Camera ingest (from a video CaptureProfile); no CAPTURE_SOURCE means no camera loop.
    CAPTURE_SOURCE: Final = "CAPTURE_SOURCE"  # /dev/video0, 0, a GStreamer pipeline, rtsp://, http://, a file
    CAPTURE_WIDTH: Final = Setting(
        "CAPTURE_WIDTH", int, default=640, minimum=160, maximum=7680, crd="CaptureProfile:spec.video.width",
        description="Width the camera is asked for (pixels).",
    )  # fmt: skip
    CAPTURE_HEIGHT: Final = Setting(
        "CAPTURE_HEIGHT", int, default=480, minimum=120, maximum=4320, crd="CaptureProfile:spec.video.height",
        description="Height the camera is asked for (pixels).",
    )  # fmt: skip
    CAPTURE_FPS: Final = Setting(
        "CAPTURE_FPS", int, default=15, minimum=1, maximum=120, crd="CaptureProfile:spec.video.fps",
        description="Frame rate the camera is asked for.",
    )  # fmt: skip
    CAPTURE_PIXEL_FORMAT: Final = Setting(
        "CAPTURE_PIXEL_FORMAT", default="MJPG", choices=get_args(PixelFormat),
        crd="CaptureProfile:spec.video.pixelFormat", description="What the camera sends: MJPG (compressed) or YUYV.",
    )  # fmt: skip
    CAPTURE_SAMPLE_EVERY: Final = Setting(
        "CAPTURE_SAMPLE_EVERY", int, default=1, minimum=1, maximum=1000, crd="CaptureProfile:spec.video.sampleEvery",
        description="Infer on every Nth frame.",
    )  # fmt: skip
    CAPTURE_BUFFER_FRAMES: Final = Setting(
        "CAPTURE_BUFFER_FRAMES", int, default=2, minimum=1, maximum=64, crd="CaptureProfile:spec.video.bufferFrames",
        description="Frames queued between capture and inference; older ones are dropped.",
    )  # fmt: skip
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
    AUDIO_SAMPLE_RATE: Final = Setting(
        "AUDIO_SAMPLE_RATE", int, default=16000, choices=get_args(SampleRate),
        crd="CaptureProfile:spec.audio.sampleRate", description="Capture rate of a device (Hz).",
    )  # fmt: skip
    AUDIO_CHANNELS: Final = Setting(
        "AUDIO_CHANNELS", int, default=1, minimum=1, maximum=8, crd="CaptureProfile:spec.audio.channels",
        description="Captured channels, mixed to mono.",
    )  # fmt: skip
    AUDIO_CHUNK_S: Final = Setting(
        "AUDIO_CHUNK_S", float, default=1.0, minimum=0.5, maximum=5.0, crd="CaptureProfile:spec.audio.chunkSeconds",
        description="Length of one analysed chunk (s).",
    )  # fmt: skip
    AUDIO_OVERLAP_S: Final = Setting(
        "AUDIO_OVERLAP_S", float, default=0.0, minimum=0.0, maximum=2.5,
        crd="CaptureProfile:spec.audio.overlapSeconds", description="Overlap of consecutive chunks (s).",
    )  # fmt: skip
    AUDIO_SILENCE_DBFS: Final = Setting(
        "AUDIO_SILENCE_DBFS", float, default=-50.0, minimum=-120.0, maximum=0.0,
        crd="CaptureProfile:spec.audio.thresholds.silenceDbfs",
        description="A frame below this level (dBFS) is silence.",
    )  # fmt: skip
    AUDIO_LOUD_DBFS: Final = Setting(
        "AUDIO_LOUD_DBFS", float, default=-6.0, minimum=-60.0, maximum=0.0,
        crd="CaptureProfile:spec.audio.thresholds.loudDbfs",
        description="A frame at or above this level (dBFS) is loud, whatever it holds.",
    )  # fmt: skip
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
    MODEL_CACHE_MAX_BYTES: Final = "MODEL_CACHE_MAX_BYTES"  # the node cache's budget: least recently used go past it
    MODEL_CACHE_KEEP_S: Final = "MODEL_CACHE_KEEP_S"  # a model started with more recently than this always stays
    MODEL_FETCH_ATTEMPTS: Final = "MODEL_FETCH_ATTEMPTS"  # consecutive failed attempts before giving up
    MODEL_FETCH_BACKOFF_MIN_S: Final = "MODEL_FETCH_BACKOFF_MIN_S"  # first retry delay, doubled per failure
    MODEL_FETCH_BACKOFF_MAX_S: Final = "MODEL_FETCH_BACKOFF_MAX_S"  # cap of the retry delay
    MODEL_FETCH_TIMEOUT_S: Final = "MODEL_FETCH_TIMEOUT_S"  # connect timeout and longest silence of a read
    MODEL_FETCH_LOCK_TIMEOUT_S: Final = "MODEL_FETCH_LOCK_TIMEOUT_S"  # longest wait for another download of it
    TERMINATION_MESSAGE_PATH: Final = "TERMINATION_MESSAGE_PATH"  # where the one-line outcome goes (Kubernetes)
    LOG_JSON: Final = ServiceEnv.LOG_JSON
    LOG_LEVEL: Final = ServiceEnv.LOG_LEVEL


class ValidateEnv:
    """Environment variables of the model validator (`python -m korall_workloads.validate`, the container of the
    operator's validation Job). MODEL_PATH, MODEL_SHA256 and LABELS_PATH mean what they mean to the vision service."""

    MODEL_PATH: Final = VisionEnv.MODEL_PATH  # the model under test (a bundled file, or the cache after model-fetch)
    MODEL_SHA256: Final = VisionEnv.MODEL_SHA256  # required: the sha256 the catalog records the result under
    LABELS_PATH: Final = VisionEnv.LABELS_PATH
    MODELS_DIR: Final = VisionEnv.MODELS_DIR
    ACCELERATOR: Final = "ACCELERATOR"  # cpu or edgetpu: what the InferenceModel runs the model on
    GOLDEN_SET: Final = "GOLDEN_SET"  # a folder with golden.json and images, or a tar archive of one
    TWIN_MODEL_PATH: Final = "VALIDATE_TWIN_MODEL_PATH"  # Edge TPU builds: the CPU build of the same model, run instead
    TWIN_MODEL_SHA256: Final = "VALIDATE_TWIN_MODEL_SHA256"  # its expected sha256
    NUM_THREADS: Final = VisionEnv.NUM_THREADS
    TERMINATION_MESSAGE_PATH: Final = "TERMINATION_MESSAGE_PATH"  # where the JSON result goes (Kubernetes)
    LOG_JSON: Final = ServiceEnv.LOG_JSON
    LOG_LEVEL: Final = ServiceEnv.LOG_LEVEL


class EventsEnv:
    """Environment variables of event delivery over MQTT, read the same way by the vision and audio workloads.

    No EVENTS_MQTT_URL means no delivery (no spool, no connection). The operator is to set the source identity
    (namespace, CR name, node through the Downward API), the broker and its Secret, and mount the spool folder.
    Ranges and defaults: `korall_workloads.common.event_settings.EventsSettings`.
    """

    MQTT_URL: Final = Setting(
        "EVENTS_MQTT_URL",
        pattern=BROKER_URL_PATTERN,  # korall_contract.mqtt: the whole rule, which both sides call
        crd=tuple(f"{where}.url" for where in _EVENTS),
        description="The broker: mqtt://host[:port], or mqtts://host[:port] for TLS (port 1-65535; default 1883, "
        "8883). Unset: events stay in the pod.",
    )
    MQTT_USERNAME: Final = "EVENTS_MQTT_USERNAME"  # from a Secret
    MQTT_PASSWORD: Final = "EVENTS_MQTT_PASSWORD"  # from a Secret
    MQTT_TLS_CA_FILE: Final = "EVENTS_MQTT_TLS_CA_FILE"  # PEM bundle that signs the broker's certificate
    MQTT_TLS_CERT_FILE: Final = "EVENTS_MQTT_TLS_CERT_FILE"  # client certificate (PEM), optional
    MQTT_TLS_KEY_FILE: Final = "EVENTS_MQTT_TLS_KEY_FILE"  # its private key (PEM)
    MQTT_TLS_INSECURE: Final = "EVENTS_MQTT_TLS_INSECURE"  # skip the host name check (tests only)
    MQTT_VERSION: Final = "EVENTS_MQTT_VERSION"  # 5 | 3.1.1
    QOS: Final = Setting(
        "EVENTS_QOS",
        int,
        default=1,
        choices=get_args(QoS),
        crd=tuple(f"{where}.qos" for where in _EVENTS),
        description="MQTT QoS of the events: 1 (at least once: the consumer drops duplicates) or 2.",
    )
    TOPIC_PREFIX: Final = Setting(
        "EVENTS_TOPIC_PREFIX",
        default="korall",
        pattern=TOPIC_PREFIX_PATTERN,
        crd=tuple(f"{where}.topicPrefix" for where in _EVENTS),
        description="Topics: <prefix>/<namespace>/<name>/events, .../availability, .../heartbeat. Levels split by '/', "
        "none empty, without +, #, spaces or control characters.",
    )
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


def env_names(env_class: type) -> frozenset[str]:
    """Every variable name an *Env class declares, inherited ones (ServiceEnv's) included."""
    return frozenset(str(getattr(env_class, key)) for key in dir(env_class) if key.isupper())
