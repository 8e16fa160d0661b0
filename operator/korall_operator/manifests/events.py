"""Event delivery of a workload pod: where its events go (MQTT) and the spool that keeps them until they are sent.

From `spec.events` of an InferenceModel (object events of its camera) or an audio CaptureProfile: the broker and
topic variables; the broker credentials and TLS files from Secrets of the CR's namespace (read by the kubelet into
the pod, never by the operator); the source identity (namespace and node from the Downward API, the CR's name);
and the spool, a SQLite outbox (workloads/korall_workloads/common/outbox.py) on a hostPath
`<settings.event_spool_host_path>/<namespace>/<name>`, so that events made while the broker is away survive a pod
restart. The kubelet creates that folder owned by root: a short init container gives it to the pod's user, as
root with only CAP_CHOWN. `durableSpool: false` (or an empty host path setting) gives an emptyDir instead. Pure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from korall_contract import SPOOL_DIR_IN_POD, EventsEnv

from korall_operator.settings import OperatorSettings
from korall_operator.specs import EventsSpec

MQTT_TLS_DIR = "/var/run/korall/mqtt-tls"
SPOOL_VOLUME = "event-spool"


@dataclass(frozen=True)
class EventsWiring:
    env: dict[str, Any]  # plain values
    env_refs: list[dict[str, Any]]  # entries with valueFrom (Secrets, the Downward API)
    volumes: list[dict[str, Any]]
    mounts: list[dict[str, Any]]
    init_containers: list[dict[str, Any]] = field(default_factory=list)


def events_wiring(
    cr_name: str,
    namespace: str,
    events: EventsSpec | None,
    settings: OperatorSettings,
    *,
    image: str,
    run_as: int,
) -> EventsWiring:
    """The variables, volumes and init container for delivering a pod's events (none without `events`)."""
    if events is None:
        return EventsWiring(env={}, env_refs=[], volumes=[], mounts=[])
    mqtt = events.mqtt
    env: dict[str, Any] = {
        EventsEnv.MQTT_URL: mqtt.url,
        EventsEnv.TOPIC_PREFIX: mqtt.topic_prefix,
        EventsEnv.QOS: mqtt.qos,
        EventsEnv.SOURCE_NAME: cr_name,
        EventsEnv.SPOOL_DIR: SPOOL_DIR_IN_POD,
    }
    refs: list[dict[str, Any]] = [
        {"name": EventsEnv.SOURCE_NAMESPACE, "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": EventsEnv.SOURCE_NODE, "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
    ]
    if mqtt.credentials_secret is not None:
        for variable, key in ((EventsEnv.MQTT_USERNAME, "username"), (EventsEnv.MQTT_PASSWORD, "password")):
            ref = {"name": mqtt.credentials_secret, "key": key}
            refs.append({"name": str(variable), "valueFrom": {"secretKeyRef": ref}})
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    if mqtt.tls_secret is not None:
        volumes.append({"name": "mqtt-tls", "secret": {"secretName": mqtt.tls_secret, "defaultMode": 0o440}})
        mounts.append({"name": "mqtt-tls", "mountPath": MQTT_TLS_DIR, "readOnly": True})
        env[EventsEnv.MQTT_TLS_CA_FILE] = f"{MQTT_TLS_DIR}/ca.crt"
        if mqtt.client_certificate:
            env[EventsEnv.MQTT_TLS_CERT_FILE] = f"{MQTT_TLS_DIR}/tls.crt"
            env[EventsEnv.MQTT_TLS_KEY_FILE] = f"{MQTT_TLS_DIR}/tls.key"
    init: list[dict[str, Any]] = []
    if events.durable_spool and settings.event_spool_host_path:
        path = f"{settings.event_spool_host_path.rstrip('/')}/{namespace}/{cr_name}"
        volumes.append({"name": SPOOL_VOLUME, "hostPath": {"path": path, "type": "DirectoryOrCreate"}})
        init.append(_spool_owner(image, settings, run_as))
    else:
        volumes.append({"name": SPOOL_VOLUME, "emptyDir": {}})
    mounts.append({"name": SPOOL_VOLUME, "mountPath": SPOOL_DIR_IN_POD})
    return EventsWiring(env=env, env_refs=refs, volumes=volumes, mounts=mounts, init_containers=init)


def _spool_owner(image: str, settings: OperatorSettings, run_as: int) -> dict[str, Any]:
    """Gives the node's spool folder (created by the kubelet, owned by root) to the pod's user."""
    chown = f"import os; os.chown({SPOOL_DIR_IN_POD!r}, {run_as}, {run_as})"
    return {
        "name": "spool-owner",
        "image": image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["python", "-c", chown],
        "volumeMounts": [{"name": SPOOL_VOLUME, "mountPath": SPOOL_DIR_IN_POD}],
        "securityContext": {
            "runAsUser": 0,
            "runAsNonRoot": False,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"], "add": ["CHOWN"]},
        },
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}},
    }
