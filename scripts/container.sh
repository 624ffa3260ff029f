#!/usr/bin/env bash
# Container images with podman (docker works the same with the Dockerfile):
#   scripts/container.sh base    Debian 12 as debian:bookworm-slim, made from Debian's archive
#                                with debootstrap when no such image is there (no registry here)
#   scripts/container.sh build [TAG]   the Dockerfile, on that base (default tag nginx-kafka:latest)
# Both use scripts/containers.conf unless CONTAINERS_CONF names another.
set -euo pipefail
cd "$(dirname "$0")/.."
export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/scripts/containers.conf}

base() {
  if podman image exists docker.io/library/debian:bookworm-slim; then
    return
  fi
  mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n 1)
  mirror=${mirror:-http://deb.debian.org/debian}
  rootfs=$(mktemp -d /tmp/nginx-kafka-rootfs.XXXXXX)
  echo "container.sh: debian:bookworm-slim from $mirror (debootstrap, about a minute)"
  debootstrap --variant=minbase --include=ca-certificates bookworm "$rootfs" "$mirror" >/dev/null
  # Slim as Debian's own -slim images: no documentation, manual pages or translations, now
  # or from later installs, and no package lists.
  cat >"$rootfs/etc/dpkg/dpkg.cfg.d/slim" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
CFG
  find "$rootfs/usr/share/doc" -mindepth 2 ! -name copyright -delete 2>/dev/null || true
  rm -rf "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/* \
    "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb
  tar -C "$rootfs" -c . | podman import --change 'CMD ["/bin/bash"]' - localhost/debian:bookworm-slim
  podman tag localhost/debian:bookworm-slim docker.io/library/debian:bookworm-slim
  rm -rf "$rootfs"
}

case "${1:-build}" in
  base) base ;;
  build)
    base
    tag=${2:-nginx-kafka:latest}
    # The host's CA bundle (with a TLS-intercepting proxy's CA, if any) for the build's
    # downloads from crates.io, as a build secret: not stored in the image.
    cacert=${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}
    secret=()
    [ -s "$cacert" ] && secret=(--secret "id=cacert,src=$cacert")
    podman build --pull=never "${secret[@]}" -t "$tag" .
    podman image inspect "$tag" --format 'container.sh: {{.Id}} {{.Size}} bytes' ;;
  *) echo "usage: scripts/container.sh base | build [TAG]" >&2; exit 2 ;;
esac
