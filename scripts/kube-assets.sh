#!/usr/bin/env bash
# Prepares the binaries of the real-control-plane test tier in .cache/kube-assets (the envtest layout:
# kube-apiserver, kube-controller-manager, kube-scheduler, etcd), if this machine has them.
#
# Where they come from, first found wins:
#   $KUBEBUILDER_ASSETS                  already set (setup-envtest in hosted CI): nothing to do
#   $KORALL_KUBE_BUILDS, ../shared/kube, /work/shared/kube
#                                        xz-compressed builds with a SHA256SUMS file: unpacked and checked
# etcd comes from the same folder or from PATH (Debian's etcd-server, installed by scripts/sysdeps.sh).
# No builds anywhere: prints why and exits 0; the tier is then skipped with that reason.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$ROOT/.cache/kube-assets"

if [ -n "${KUBEBUILDER_ASSETS:-}" ]; then
  echo "kube-assets: using KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS"
  exit 0
fi

src=""
for candidate in "${KORALL_KUBE_BUILDS:-}" "$ROOT/../shared/kube" /work/shared/kube; do
  if [ -n "$candidate" ] && [ -f "$candidate/kube-apiserver.xz" ] && [ -f "$candidate/SHA256SUMS" ]; then
    src="$candidate"; break
  fi
done
if [ -z "$src" ]; then
  echo "kube-assets: no Kubernetes server builds found; the real-control-plane tests will be skipped"
  exit 0
fi

mkdir -p "$OUT"
if (cd "$OUT" && sha256sum --quiet -c "$src/SHA256SUMS" >/dev/null 2>&1); then
  :  # already unpacked and intact
else
  echo "kube-assets: unpacking $src into $OUT"
  for xz_file in "$src"/*.xz; do
    name="$(basename "$xz_file" .xz)"
    xz -dc "$xz_file" > "$OUT/$name.partial"
    chmod 0755 "$OUT/$name.partial"
    mv -f "$OUT/$name.partial" "$OUT/$name"
  done
  (cd "$OUT" && sha256sum --quiet -c "$src/SHA256SUMS") || { echo "kube-assets: sha256 mismatch" >&2; exit 1; }
fi
if [ ! -x "$OUT/etcd" ] && command -v etcd >/dev/null; then
  ln -sf "$(command -v etcd)" "$OUT/etcd"
fi
echo "kube-assets: $OUT"
