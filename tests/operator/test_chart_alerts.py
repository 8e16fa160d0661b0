"""The chart's alerting and monitoring options, rendered by a real helm: e-mail alerts (their ConfigMap, the
narrowest RBAC, the operator's environment), the operator's /metrics Service and ServiceMonitor, the workloads'
PodMonitor, and the PrometheusRule, checked by Debian's promtool (`check rules`, and `test rules` with
tests/operator/prometheus/korall_rules_test.yaml)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from korall_operator.settings import OperatorSettings
from test_chart import K8S_VERSION, by_kind, helm, operator_container, render, tools_bin

__all__ = ["tools_bin"]  # the fixture, used by name

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
RULES_TEST = Path(__file__).parent / "prometheus" / "korall_rules_test.yaml"
MAIL_ON = ("alerts.smtp.host=smtp.example.org", "alerts.smtp.secret=korall-smtp", "alerts.to={ops@example.org}")


def env_of(docs: list[dict[str, Any]]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in operator_container(docs)["env"] if "value" in e}


def test_three_values_turn_mail_on_with_a_configmap_and_a_role_for_exactly_it_and_the_secret(tools_bin: Path) -> None:
    docs = render(tools_bin, *MAIL_ON)
    kinds = by_kind(docs)
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    (configmap,) = kinds["ConfigMap"]
    assert configmap["metadata"] == {**configmap["metadata"], "name": "korall-alerts", "namespace": "korall-system"}
    assert "data" not in configmap  # the operator's to write; helm never resets it
    (role,) = [r for r in kinds["Role"] if r["metadata"]["name"] == "korall-alerts"]
    assert role["metadata"]["namespace"] == "korall-system"
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["korall-alerts"], "verbs": ["get", "patch"]},
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["korall-smtp"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["events"], "verbs": ["get", "create", "patch"]},
    ]
    (binding,) = [b for b in kinds["RoleBinding"] if b["metadata"]["name"] == "korall-alerts"]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "korall", "namespace": "korall-system"}]

    env = env_of(docs)
    assert (env["KORALL_ALERTS_SMTP_HOST"], env["KORALL_ALERTS_SMTP_SECRET"]) == ("smtp.example.org", "korall-smtp")
    assert json.loads(env["KORALL_ALERTS_TO"]) == ["ops@example.org"]
    assert env["KORALL_ALERTS_STATE_CONFIGMAP"] == "korall-alerts"


def test_the_alert_values_reach_the_operator_settings(tools_bin: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sets = (
        *MAIL_ON,
        "alerts.groupWaitSeconds=5",
        "alerts.smtp.security=tls",
        "alerts.smtp.port=465",
        "alerts.toBySeverity.critical={oncall@example.org}",
        "alerts.severities.RolledBack=critical",
        "alerts.severities.Unschedulable=none",
    )
    for name, value in env_of(render(tools_bin, *sets)).items():
        monkeypatch.setenv(name, value)
    settings = OperatorSettings()
    assert settings.alerts_group_wait_s == 5 and settings.alerts_smtp_security == "tls"
    assert settings.alerts_smtp_port == 465 and settings.alerts_to_by_severity == {"critical": ["oncall@example.org"]}
    assert settings.alerts_severities["RolledBack"] == "critical"  # changed
    assert settings.alerts_severities["Unschedulable"] == "none"  # turned off
    assert settings.alerts_severities["CameraUnavailable"] == "critical"  # the other defaults stay


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        ("alerts.smtp.security=ssl", "/alerts/smtp/security"),
        ("alerts.to={not-an-address}", "/alerts/to/0"),
        ("alerts.severities.CrashLoopBackOff=page", "/alerts/severities/CrashLoopBackOff"),
        ("alerts.toBySeverity.urgent={a@b.c}", "/alerts/toBySeverity"),
        ("alerts.groupWaitSeconds=0", "/alerts/groupWaitSeconds"),
        ("metrics.prometheusRule.cameraDownFor=2 minutes", "/metrics/prometheusRule/cameraDownFor"),
    ],
)
def test_bad_alert_values_are_refused_by_the_schema(tools_bin: Path, value: str, complaint: str) -> None:
    out = helm(tools_bin, "template", "k", str(Path(__file__).parents[2] / "charts" / "korall"), "--set", value,
               check=False)  # fmt: skip
    assert out.returncode != 0 and complaint in out.stderr, out.stderr


def test_the_operator_serves_metrics_and_the_monitors_select_it_and_the_workloads(tools_bin: Path) -> None:
    default = render(tools_bin)
    ports = operator_container(default)["ports"]
    assert {"name": "metrics", "containerPort": 8081, "protocol": "TCP"} in ports
    assert "Service" not in by_kind(default)  # nothing more by default

    docs = render(tools_bin, "metrics.serviceMonitor.enabled=true", "metrics.podMonitor.enabled=true",
                  "watchNamespace=edge")  # fmt: skip
    kinds = by_kind(docs)
    (service,) = kinds["Service"]
    kubernetes_validate.validate(service, K8S_VERSION, strict=True)
    (deployment,) = kinds["Deployment"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 8081, "targetPort": "metrics", "protocol": "TCP"}]
    (monitor,) = kinds["ServiceMonitor"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "30s"}]
    (pods,) = kinds["PodMonitor"]
    assert pods["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/managed-by": "korall-operator"}
    assert pods["spec"]["namespaceSelector"] == {"matchNames": ["edge"]}
    assert pods["spec"]["podMetricsEndpoints"][0]["port"] == "http"  # the name of the workloads' port


def _rules(tools_bin: Path, *sets: str) -> dict[str, Any]:
    (rule,) = by_kind(render(tools_bin, "metrics.prometheusRule.enabled=true", *sets))["PrometheusRule"]
    return dict(rule["spec"])


def test_the_prometheus_rules_pass_promtool_check_and_its_unit_test(tools_bin: Path, tmp_path: Path) -> None:
    rules = tmp_path / "korall_rules.yaml"
    rules.write_text(yaml.safe_dump(_rules(tools_bin)))
    check = subprocess.run([PROMTOOL, "check", "rules", str(rules)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0 and "SUCCESS: 10 rules found" in check.stdout, check.stdout + check.stderr
    shutil.copy(RULES_TEST, tmp_path / RULES_TEST.name)
    test = subprocess.run([PROMTOOL, "test", "rules", RULES_TEST.name], capture_output=True, text=True, timeout=60,
                          cwd=tmp_path)  # fmt: skip
    assert test.returncode == 0 and "SUCCESS" in test.stdout, test.stdout + test.stderr

    names = {r["alert"] for group in _rules(tools_bin)["groups"] for r in group["rules"]}
    assert {"KorallCameraDown", "KorallInferenceSlow", "KorallEventBacklog", "KorallAlertMailFailing"} <= names
    changed = _rules(tools_bin, "metrics.prometheusRule.cameraDownFor=7m")
    camera = next(r for g in changed["groups"] for r in g["rules"] if r["alert"] == "KorallCameraDown")
    assert camera["for"] == "7m"
