#!/usr/bin/env bash
# Installs what a step needs when it is missing: build (compilers, headers), test (ab, tansu),
# debian (Debian's nginx, its module build kit, and the Lua collector the benchmark runs),
# bench (all of debian, wrk, gnuplot, ss).
set -euo pipefail

need_pkgs=()
debian_pkgs=(nginx nginx-dev libnginx-mod-http-lua lua-nginx-kafka lua-cjson)
want() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'ok installed' || need_pkgs+=("$1"); }

case "${1:-build}" in
  build) for p in build-essential libpcre2-dev libssl-dev zlib1g-dev clang libclang-dev curl; do want "$p"; done ;;
  test)  for p in apache2-utils valgrind; do want "$p"; done ;;
  debian) for p in "${debian_pkgs[@]}"; do want "$p"; done ;;
  bench) for p in "${debian_pkgs[@]}" wrk gnuplot-nox iproute2; do want "$p"; done ;;
  *) echo "deps.sh: unknown step $1" >&2; exit 2 ;;
esac

if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "installing: ${need_pkgs[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  # Keep Debian's nginx package from starting a server of its own on port 80.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
  fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

if [ "${1:-}" = test ] && ! command -v tansu >/dev/null && [ ! -x "$HOME/.cargo/bin/tansu" ]; then
  echo "installing tansu 0.6.0 (a Kafka-compatible broker; about 11 minutes the first time)"
  cargo install tansu@0.6.0 --locked --no-default-features --features dynostore
fi
