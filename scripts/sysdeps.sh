#!/usr/bin/env bash
# Installs the Debian packages the test suite needs, only when they are missing.
# espeak-ng speaks real test phrases and sox makes noise and mixes it; etcd-server backs the real Kubernetes
# control plane of the operator tests (tests/realcluster/); mosquitto is the real MQTT broker of the event-delivery
# tests (with mosquitto_passwd), prometheus brings promtool for the chart's alerting rules; all are test-only.
# chromium and chromium-driver run the live pages' tests in a real headless browser. They are installed where the
# distribution has them (Debian does; Ubuntu ships chromium only as a snap): where they cannot be, those tests skip
# and say why, and the rest of the suite runs.
set -euo pipefail
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
updated=""
apt_install() {
  [ -n "$updated" ] || { $SUDO apt-get update -qq && updated=1; }
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

missing=()
command -v espeak-ng >/dev/null || missing+=(espeak-ng)
command -v sox >/dev/null || missing+=(sox)
command -v etcd >/dev/null || missing+=(etcd-server)
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
command -v promtool >/dev/null || missing+=(prometheus)
command -v openssl >/dev/null || missing+=(openssl)
if [ ${#missing[@]} -gt 0 ]; then
  echo "sysdeps: installing ${missing[*]}"
  apt_install "${missing[@]}"
fi

browser=()
command -v chromium >/dev/null || browser+=(chromium)
command -v chromedriver >/dev/null || browser+=(chromium-driver)
if [ ${#browser[@]} -gt 0 ]; then
  echo "sysdeps: installing ${browser[*]} (for the live-page tests)"
  apt_install "${browser[@]}" || echo "sysdeps: could not install ${browser[*]}; the live-page tests will skip"
fi
