"""The one place the operator reads its configuration: `KORALL_*` environment variables, validated at start.

The Helm chart sets these from values.yaml (see charts/korall/templates/deployment.yaml). Every default is
what a stock cluster with the Coral device plugin needs; the docstring under each field says why it exists.

The operator must not import workload code, so the list of models the vision image bundles is a copy shipped
as package data (`vision_models.json`, generated from `models/manifest.json`; a test proves they agree).
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Literal

from korall_contract import DEFAULT_TPU_RESOURCE, MODEL_CACHE_KEEP_S_RANGE, MODEL_CACHE_MAX_BYTES_LIMIT
from limits import parse_many
from pydantic import BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_VISION_IMAGE = "ghcr.io/korall-project/korall-vision:0.1.0"
DEFAULT_AUDIO_IMAGE = "ghcr.io/korall-project/korall-audio:0.1.0"

Severity = Literal["critical", "warning", "info", "none"]
"""How urgent an alert is; `none` turns a reason's alerts off. Each severity has its own recipients and mails."""

DEFAULT_ALERT_SEVERITIES: dict[str, Severity] = {
    # The fleet stops sensing: someone must act now.
    "CameraUnavailable": "critical",
    "AudioSourceUnavailable": "critical",
    "CrashLoopBackOff": "critical",
    "ImagePullBackOff": "critical",
    "ErrImagePull": "critical",
    "ModelDownloadFailed": "critical",
    "ValidationFailed": "critical",
    # Something did not happen as asked, but what ran before still runs (or it waits for capacity).
    "RolledBack": "warning",
    "Unschedulable": "warning",
    "ProgressDeadlineExceeded": "warning",
    "NotReady": "warning",
}
"""Condition reasons -> severity (the chart's `alerts.severities`); any other reason gets the default severity."""


class BundledModel(BaseModel):
    """A model file baked into the vision image under korall_contract.MODELS_DIR_IN_IMAGE."""

    file: str
    edgetpu: bool
    sha256: str


class BundledCatalog(BaseModel):
    models: list[BundledModel]
    labels: list[str]


@cache
def bundled_catalog() -> BundledCatalog:
    """The models and labels files of the vision image at the pinned tag (package data, read once)."""
    text = resources.files("korall_operator").joinpath("vision_models.json").read_text(encoding="utf-8")
    return BundledCatalog.model_validate(json.loads(text))


def _bundled_models() -> list[BundledModel]:
    return list(bundled_catalog().models)


def _bundled_labels() -> list[str]:
    return list(bundled_catalog().labels)


class OperatorSettings(BaseSettings):
    """Operator configuration. Environment: KORALL_<FIELD NAME IN CAPITALS>, e.g. KORALL_TPU_RESOURCE."""

    model_config = SettingsConfigDict(env_prefix="KORALL_", frozen=True, extra="ignore")

    tpu_resource: str = DEFAULT_TPU_RESOURCE
    """Extended resource a Coral device plugin advertises; an edgetpu pod gets a limit of 1 of it, so the
    scheduler places at most one TPU pod per TPU. Empty means no TPU resource on this cluster: edgetpu models are
    then refused with a clear condition instead of pods that never schedule."""

    tpu_node_label: str = "korall.io/tpu"
    """Node label whose value names the TPU interface (`usb` or `pci`); edgetpu pods get a required node affinity
    on it. Set it by hand (`kubectl label node n1 korall.io/tpu=usb`) or with a Node Feature Discovery rule (see
    docs/operator.md). Empty disables the affinity and relies on the extended resource alone."""

    device_access: Literal["privileged", "device-plugin"] = "device-plugin"
    """How a pod gets access to host devices (TPU, camera, microphone). `device-plugin` (the default, with the
    chart's device plugin): the pod requests the devices as extended resources and the plugin's allocation adds
    the device nodes and their cgroup rules, so the pod runs unprivileged, all capabilities dropped, with no
    hostPath. `privileged`: the documented opt-in for clusters that cannot run a plugin: hostPath mounts and a
    privileged container, because a hostPath alone does not open the device cgroup and the USB TPU re-enumerates
    under a new device node after its first inference (manifests/devices.py)."""

    camera_resource_prefix: str = Field(default="korall.io/video", pattern=r"^$|^[a-z0-9.-]+/[a-z0-9][-a-z0-9]*$")
    """Cameras as schedulable resources, one per video device: a pod that opens /dev/videoN requests one
    `<prefix>N` (korall.io/video0, as the chart's plugin advertises them), so the scheduler never gives one camera
    to two pods, and the operator reports the second as CameraInUse. Empty: cameras are not requested (clusters
    without such a plugin; then only `privileged` access can open them)."""

    microphone_resource: str = Field(default="korall.io/snd", pattern=r"^$|^[a-z0-9.-]+/[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    """The extended resource of a node's sound devices (its whole /dev/snd, count 1: one microphone pod per
    node): an audio pod that opens an ALSA device requests one. Empty: not requested (as for cameras)."""

    device_groups: list[int] = Field(default_factory=lambda: [29, 44, 46])
    """Host GIDs that own device nodes, given to device pods as supplementalGroups so that the non-root user may
    open them. Debian/Ubuntu: audio 29 (/dev/snd), video 44 (/dev/video*), plugdev 46 (the Coral USB accelerator,
    through the udev rule that Coral's packages install). JSON list in the environment, e.g. `[29,44,46]`."""

    device_run_as_user: int | None = Field(default=None, ge=0)
    """UID of pods with a device; None runs them as run_as_user. 0 (root) only for nodes whose device nodes are
    root-only (no udev rule for the accelerator)."""

    vision_image: str = DEFAULT_VISION_IMAGE
    audio_image: str = DEFAULT_AUDIO_IMAGE
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"

    run_as_user: int = Field(default=10001, ge=1)
    """UID (and GID) of workload pods that need no device: the images' non-root user."""

    vision_models: list[BundledModel] = Field(default_factory=_bundled_models)
    """The model files the vision image bundles (JSON list to override, for a custom image)."""

    vision_labels: list[str] = Field(default_factory=_bundled_labels)
    """The labels files the vision image bundles."""

    log_json: bool = True
    """Workloads log JSON lines (one object per line) for the cluster's log pipeline."""

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Log level of the operator itself."""

    watch_namespace: str = ""
    """Namespace to watch; empty watches all namespaces (cluster-wide mode, needs namespaces list/watch)."""

    watch_server_timeout_s: int = Field(default=270, ge=10)
    """Asks the API server to end each watch after this long, so a stalled watch is always renewed."""

    watch_client_timeout_s: int = Field(default=300, ge=10)
    """The client gives up on a watch that sends nothing for this long (a silently dead connection)."""

    watch_connect_timeout_s: int = Field(default=30, ge=1)

    resync_interval_s: float = Field(default=60.0, gt=0)
    """Every this often, every parent is compared with its children and CaptureProfile as the operator's indexes
    know them, and what drifted is put right (handlers/resync.py): the longest a lost watch event can go unnoticed.
    Costs no API call for a parent that has not drifted."""

    api_token_secret: str = Field(default="korall-api-tokens", pattern=r"^$|^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    """The Secret of API token hashes every workload pod mounts from its own namespace (key `tokens`), unless its
    CR names another (`spec.auth.tokenSecretRef`). Until it exists every route but /health, /ready (and /metrics)
    answers 401. Empty: no auth for pods whose CR names no Secret (a development cluster)."""

    metrics_need_token: bool = False
    """true: /metrics of the workloads needs a token with the `metrics` scope (AUTH_METRICS)."""

    rate_limit_per_client: str = "100/second"
    """Requests per client address to a workload, in `limits` notation (RATE_LIMIT_PER_CLIENT); empty: none."""

    rate_limit_per_token: str = "100/second"
    """Requests per token name to a workload (RATE_LIMIT_PER_TOKEN); empty: none."""

    progress_deadline_s: int = Field(default=300, ge=30)
    """progressDeadlineSeconds of the workload Deployments: a rollout that makes no progress for this long is
    reported as ProgressDeadlineExceeded. Pods that crash, cannot pull their image or cannot be scheduled are
    reported at once, from the pods themselves; this catches the rest (Kubernetes' default is 600 s)."""

    namespace: str = "korall-system"
    """The operator's own namespace (the chart sets it from the Downward API): where it reads S3 credentials."""

    # -- model delivery (docs/model-delivery.md) ----------------------------------------------------------------

    s3_credentials_secret: str = "korall-s3"
    """Secret in the operator's namespace with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (optionally
    AWS_SESSION_TOKEN, AWS_ENDPOINT_URL, AWS_REGION, KORALL_S3_ALLOWED) for `model.s3` models that name none."""

    s3_endpoint_url: str | None = Field(default=None, pattern=r"^https?://\S+$")
    """S3 API endpoint of an S3-compatible store (MinIO, Ceph, R2, ...); unset: AWS S3."""

    s3_region: str = Field(default="us-east-1", pattern=r"^[a-z0-9-]{1,32}$")
    s3_path_style: bool = False
    """`<endpoint>/<bucket>/<key>` addressing: most self-hosted stores need it."""

    link_ttl_s: int = Field(default=600, ge=10, le=7 * 24 * 3600)
    """Lifetime of a presigned model link; re-signed at half of it, so a pod that starts later still finds one."""

    link_retry_s: float = Field(default=30.0, gt=0)
    """Wait before signing again after a failure time may fix (credentials Secret missing, store unreachable)."""

    link_rate_per_model: str = "6/minute"
    link_rate_overall: str = "120/minute"
    """Most links signed for one model / for all models in a moving window (a flapping pod cannot make the
    operator sign thousands)."""

    model_cache_host_path: str = "/var/lib/korall/models"
    """Node folder of the content-addressed model cache (a hostPath: a model is downloaded once per node);
    empty: an emptyDir per pod (downloaded at every pod start)."""

    model_max_bytes: int = Field(default=512 * 1024 * 1024, ge=1024)
    """Largest model file a pod downloads."""

    model_cache_max_bytes: int = Field(default=4 * 1024**3, ge=0, le=MODEL_CACHE_MAX_BYTES_LIMIT)
    """Budget of each node's model cache: the downloader removes the models used least recently past it (0: never)."""

    model_cache_keep_s: int = Field(default=86400, ge=MODEL_CACHE_KEEP_S_RANGE[0], le=MODEL_CACHE_KEEP_S_RANGE[1])
    """A cached model used more recently than this (a pod started with it, a collection found it in use) stays."""

    event_spool_host_path: str = "/var/lib/korall/spool"
    """Node folder of the event spools (`<folder>/<namespace>/<name>`): events made while the broker is away
    survive the pod; empty: every spool is an emptyDir (docs/events.md)."""

    metrics_port: int = Field(default=8081, ge=0, le=65535)
    """Port of the operator's Prometheus endpoint (`GET /metrics`); 0 turns it off. kopf's liveness is separate."""

    # -- alerts (korall_operator/alerting, docs/alerting.md) ------------------------------------------------------

    alerts_severities: dict[str, Severity] = Field(default_factory=lambda: dict(DEFAULT_ALERT_SEVERITIES))
    """Condition reason -> severity, JSON in the environment. Reasons not listed get `alerts_default_severity`."""

    alerts_default_severity: Severity = "warning"

    alerts_not_ready_after_s: float = Field(default=300.0, gt=0)
    """A resource whose Ready condition has been False this long, without a Degraded reason, fires `NotReady`."""

    alerts_group_wait_s: float = Field(default=30.0, gt=0)
    """Alertmanager's group_wait: how long a new alert waits for others to fire with it before the first mail."""

    alerts_group_interval_s: float = Field(default=300.0, gt=0)
    """Alertmanager's group_interval: the least time between two mails of one group (new alerts, resolved ones)."""

    alerts_repeat_interval_s: float = Field(default=14400.0, gt=0)
    """Alertmanager's repeat_interval: a group that still fires, unchanged, is mailed again after this long."""

    alerts_digest_after: int = Field(default=10, ge=1)
    """A mail with more alerts than this lists this many in full and sums up the rest ("and 40 more")."""

    alerts_smtp_host: str = ""
    """SMTP server; empty: no mails (alerts are still evaluated, and exported on /metrics)."""

    alerts_smtp_port: int = Field(default=587, ge=1, le=65535)

    alerts_smtp_security: Literal["starttls", "tls", "none"] = "starttls"
    """`starttls` (port 587: upgrade the plain connection, refuse a server that does not offer it), `tls` (port 465:
    TLS from the first byte) or `none` (only for a relay on localhost)."""

    alerts_smtp_secret: str = ""
    """Secret in `alerts_namespace` with the SMTP `username` and `password` (and optionally `ca.crt`, a CA bundle
    the server's certificate is checked against instead of the system's). Empty: no login. Read at every send, so
    a changed password needs no restart."""

    alerts_smtp_timeout_s: float = Field(default=20.0, gt=0)

    alerts_from: str = ""
    """Sender address; empty: the SMTP username when it is an address, else `korall@<smtp host>`."""

    alerts_to: list[str] = Field(default_factory=list)
    """Recipients of every severity (JSON list in the environment)."""

    alerts_to_by_severity: dict[Literal["critical", "warning", "info"], list[str]] = Field(default_factory=dict)
    """Recipients per severity, replacing `alerts_to` for the severities listed (JSON, e.g. {"info": []})."""

    alerts_namespace: str = ""
    """Namespace of the SMTP Secret and the state ConfigMap (the chart's release namespace); empty: the
    operator pod's own namespace."""

    alerts_state_configmap: str = "korall-alerts"
    """ConfigMap (created by the chart) where the operator records which alerts it has mailed, so that a restart
    neither mails them again nor forgets to mail their resolution."""

    alerts_retry_max_s: float = Field(default=60.0, gt=0)
    """A mail that could not be sent is retried after 1 s, 2 s, 4 s ... up to this; it is never dropped."""

    alerts_cluster_name: str = ""
    """Named in every mail's subject, to tell fleets apart."""

    # -- the model catalog (docs/catalog.md) -------------------------------------------------------------------

    validation_timeout_s: int = Field(default=900, ge=30, le=24 * 3600)
    """activeDeadlineSeconds of a validation Job: a validation without a result by then is an Error (the model is
    validated again when its spec changes)."""

    validation_ttl_s: int = Field(default=86400, ge=0)
    """ttlSecondsAfterFinished of a validation Job: Kubernetes deletes it (and its pod) this long after it ended
    (its result stays in the InferenceModel's status)."""

    four_eyes: bool = True
    """A production model needs an approval from someone other than its requester (the korall.io/requested-by
    annotation, which the chart's ValidatingAdmissionPolicy makes the API server's own account of who that is)."""

    @field_validator("rate_limit_per_client", "rate_limit_per_token")
    @classmethod
    def _rate_limit(cls, value: str) -> str:
        if value.strip():
            try:
                parse_many(value)
            except ValueError as exc:
                raise ValueError(f"not a rate limit such as 100/second;3000/minute ({exc})") from None
        return value.strip()

    def model_file(self, name: str) -> BundledModel | None:
        """The bundled model of that file name, or None when the image does not have it."""
        return next((m for m in self.vision_models if m.file == name), None)
