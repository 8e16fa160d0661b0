"""Fixtures of the kind end-to-end suite (see kind_support.py for what it needs and how to keep the cluster)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from kind_support import (
    CLUSTER,
    OPERATOR_IMAGE,
    RELEASE_NAMESPACE,
    ROOT,
    TAG,
    VISION_IMAGE,
    KindCluster,
    run,
)


@pytest.fixture(scope="session")
def kind_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KindCluster]:
    """Create the cluster, fake a USB TPU on its node, build and load the images, helm install korall."""
    tools = Path(run("bash", str(ROOT / "scripts" / "tools.sh")).stdout.strip().splitlines()[-1])
    kubeconfig = tmp_path_factory.mktemp("kind") / "kubeconfig"
    run("kind", "delete", "cluster", "--name", CLUSTER, check=False)
    run("kind", "create", "cluster", "--name", CLUSTER, "--kubeconfig", str(kubeconfig), "--wait", "180s", timeout=900)
    try:
        node = f"{CLUSTER}-control-plane"
        cluster = KindCluster(CLUSTER, kubeconfig, tools, node)

        # A fake Coral: the extended resource on the node status (as a device plugin would advertise it) and the
        # node label of its interface. The chart's own device plugin stays off (below): it would register
        # coral.ai/tpu with the devices it finds, none, and the kubelet would reset the patched capacity to 0.
        cluster.kubectl(
            "patch",
            "node",
            node,
            "--subresource=status",
            "--type=json",
            "-p",
            '[{"op": "add", "path": "/status/capacity/coral.ai~1tpu", "value": "1"}]',
        )
        cluster.kubectl("label", "node", node, "korall.io/tpu=usb", "--overwrite")

        run("docker", "build", "-f", "Dockerfile.operator", "-t", OPERATOR_IMAGE, ".", timeout=1800)
        run("docker", "build", "-f", "Dockerfile.vision", "-t", VISION_IMAGE, ".", timeout=1800)
        for image in (OPERATOR_IMAGE, VISION_IMAGE):
            run("kind", "load", "docker-image", image, "--name", CLUSTER, timeout=900)

        cluster.helm(
            "install", "korall", str(ROOT / "charts" / "korall"),
            "--namespace", RELEASE_NAMESPACE, "--create-namespace",
            "--set", f"image.tag={TAG}", "--set", "image.pullPolicy=Never",
            "--set", f"workloads.visionImage={VISION_IMAGE}", "--set", "workloads.pullPolicy=Never",
            "--set", "devicePlugin.enabled=false",
            "--wait", "--timeout", "5m",
        )  # fmt: skip
        yield cluster
    finally:
        if os.environ.get("KORALL_E2E_KEEP") != "1":
            run("kind", "delete", "cluster", "--name", CLUSTER, check=False)
