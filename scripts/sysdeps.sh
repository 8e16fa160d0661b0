#!/usr/bin/env bash
# Installs the Debian packages the test suite needs, only when they are missing.
# espeak-ng speaks real test phrases and sox makes noise and mixes it; etcd-server backs the real Kubernetes
# control plane of the operator tests (tests/realcluster/); all are test-only.
set -euo pipefail
missing=()
command -v espeak-ng >/dev/null || missing+=(espeak-ng)
command -v sox >/dev/null || missing+=(sox)
command -v etcd >/dev/null || missing+=(etcd-server)
[ ${#missing[@]} -eq 0 ] && exit 0
echo "sysdeps: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
