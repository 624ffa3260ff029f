#!/usr/bin/env bash
# Installs what a step needs when it is missing: build (compilers, headers), test (ab,
# valgrind, prometheus and promtool for t/metrics.rs, tansu, chromium, node and sdk/'s npm packages),
# debian (Debian's nginx, its module build kit, and the Lua collector the benchmark runs),
# container (podman, debootstrap),
# bench (all of debian, wrk, gnuplot, ss).
set -euo pipefail

need_pkgs=()
apt_flags=()
debian_pkgs=(nginx nginx-dev libnginx-mod-http-lua lua-nginx-kafka lua-cjson)
want() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'ok installed' || need_pkgs+=("$1"); }

case "${1:-build}" in
  build) for p in build-essential libpcre2-dev libssl-dev zlib1g-dev clang libclang-dev curl; do want "$p"; done ;;
  # prometheus without its recommended node-exporter, which the tests do not use.
  # chromium and node (with sdk/'s npm packages, below) for the SDK's tests and t/browser.rs.
  test)  for p in apache2-utils valgrind prometheus chromium; do want "$p"; done
         command -v node >/dev/null || want nodejs
         command -v npm >/dev/null || want npm
         apt_flags=(--no-install-recommends) ;;
  debian) for p in "${debian_pkgs[@]}"; do want "$p"; done ;;
  # podman and what it runs on here (CONTAINERS.md), debootstrap for the base image, ab.
  # kubectl (its kustomize) where an apt source has it, as Google's does on these machines.
  container) for p in podman buildah debootstrap runc uidmap slirp4netns apache2-utils; do want "$p"; done
             command -v kubectl >/dev/null || want kubectl ;;
  bench) for p in "${debian_pkgs[@]}" wrk gnuplot-nox iproute2; do want "$p"; done ;;
  *) echo "deps.sh: unknown step $1" >&2; exit 2 ;;
esac

if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "installing: ${need_pkgs[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  # Keep Debian's nginx and prometheus packages from starting servers of their own (on 80,
  # 9090, and node-exporter's 9100): the tests start their own, on free ports.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
  fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${apt_flags[@]}" \
    "${need_pkgs[@]}" >/dev/null
fi

# A system prometheus (started by a policy-rc.d that allows it, or installed before) does not
# stop the tests, which use free ports, but it is not ours: say so.
if [ "${1:-}" = test ] && command -v ss >/dev/null && ss -ltnH 'sport = :9090' | grep -q .; then
  echo "deps.sh: note: something listens on port 9090 (a system prometheus?); the tests do not need it" >&2
fi

if [ "${1:-}" = test ] && ! command -v tansu >/dev/null && [ ! -x "$HOME/.cargo/bin/tansu" ]; then
  echo "installing tansu 0.6.0 (a Kafka-compatible broker; about 11 minutes the first time)"
  cargo install tansu@0.6.0 --locked --no-default-features --features dynostore
fi

# esbuild and playwright-core, as sdk/package-lock.json pins them.
sdk="$(dirname "$0")/../sdk"
if [ "${1:-}" = test ] && [ ! "$sdk/node_modules/.package-lock.json" -nt "$sdk/package-lock.json" ]; then
  echo "installing sdk/'s npm packages (npm ci)"
  (cd "$sdk" && npm ci --no-audit --no-fund --loglevel=error)
fi

# AWS's reference MSK IAM signer (PyPI), for t/msk_iam.rs.
if [ "${1:-}" = test ] && ! python3 -c 'import aws_msk_iam_sasl_signer' 2>/dev/null; then
  echo "installing aws-msk-iam-sasl-signer-python"
  python3 -m pip install --quiet aws-msk-iam-sasl-signer-python
fi

# kubernetes-validate (PyPI), for t/container.rs's manifests.
if [ "${1:-}" = container ] && ! command -v kubernetes-validate >/dev/null; then
  echo "installing kubernetes-validate"
  python3 -m pip install --quiet kubernetes-validate
fi

# A local S3 server for t/spool.rs's tansu that keeps its data through a SIGKILL.
if [ "${1:-}" = test ] && ! command -v moto_server >/dev/null && [ -z "${MOTO_SERVER:-}" ]; then
  echo "installing moto (a local S3 server, for tansu's storage in t/spool.rs)"
  python3 -m pip install --quiet 'moto[server]'
fi
