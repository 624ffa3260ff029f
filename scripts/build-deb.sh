#!/usr/bin/env bash
# `make deb`: libnginx-mod-http-kafka, for Debian's own nginx, laid out as Debian's
# libnginx-mod-* packages: the module in /usr/lib/nginx/modules, its load_module line in
# /usr/share/nginx/modules-available/mod-http-kafka.conf, enabled on install by a symlink in
# /etc/nginx/modules-enabled (as dh_nginx's scripts do), and a dependency on the exact nginx
# ABI it was built for (nginx-abi-X, which Debian's nginx provides). Into build/deb/.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/build-debian.sh
abi=$(sed -n 's/^nginx:abi=//p' /usr/share/nginx/src/debian/libnginx-mod.abisubstvars)
[ -n "$abi" ] || { echo "build-deb.sh: no nginx ABI in nginx-dev" >&2; exit 1; }
upstream=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
version="$upstream-1"
arch=$(dpkg --print-architecture)
name=libnginx-mod-http-kafka
out=build/deb
stage=$out/stage
rm -rf "$stage" && mkdir -p "$stage/DEBIAN" "$stage/usr/lib/nginx/modules" \
  "$stage/usr/share/nginx/modules-available" "$stage/usr/share/doc/$name"

install -m 0644 build/debian/ngx_http_kafka_module.so "$stage/usr/lib/nginx/modules/"
strip --strip-unneeded "$stage/usr/lib/nginx/modules/ngx_http_kafka_module.so"
echo "load_module modules/ngx_http_kafka_module.so;" \
  >"$stage/usr/share/nginx/modules-available/mod-http-kafka.conf"
cat >"$stage/usr/share/doc/$name/copyright" <<COPYRIGHT
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: nginx-kafka

Files: *
License: Apache-2.0
 On Debian systems, the complete text of the Apache License 2.0 is in
 /usr/share/common-licenses/Apache-2.0.
COPYRIGHT
gzip -9n <README.md >"$stage/usr/share/doc/$name/README.md.gz"

# What the module links against, as dpkg-shlibdeps finds it (it wants a debian/control).
shlibs=$(
  tmp=$(mktemp -d)
  mkdir "$tmp/debian"
  printf 'Source: %s\n\nPackage: %s\nArchitecture: any\n' "$name" "$name" >"$tmp/debian/control"
  so=$(readlink -f "$stage/usr/lib/nginx/modules/ngx_http_kafka_module.so")
  (cd "$tmp" && dpkg-shlibdeps -O "$so" 2>/dev/null) | sed -n 's/^shlibs:Depends=//p'
  rm -rf "$tmp"
)

cat >"$stage/DEBIAN/control" <<CONTROL
Package: $name
Version: $version
Architecture: $arch
Section: httpd
Priority: optional
Maintainer: nginx-kafka developers <nginx-kafka@localhost>
Depends: $abi, $shlibs
Installed-Size: $(du -sk "$stage/usr" | cut -f1)
Homepage: https://github.com/nginx-kafka/nginx-kafka
Description: Kafka producer module for Nginx
 nginx-kafka turns nginx into an event-collection endpoint: each worker hands
 the events posted to it to its own asynchronous librdkafka producer
 (kafka_ingest, kafka_collect), with metrics, readiness, a local spool and
 acknowledged delivery. Built for $abi.
CONTROL

# The maintainer scripts of dh_nginx (nginx-dev's autoscripts), for this module's snippet.
for script in postinst prerm postrm; do
  {
    echo '#!/bin/sh'
    echo 'set -e'
    sed 's/#NAMES#/mod-http-kafka.conf:50-mod-http-kafka.conf/' \
      "/usr/share/debhelper/autoscripts/$script-nginx"
  } >"$stage/DEBIAN/$script"
  chmod 0755 "$stage/DEBIAN/$script"
done
(cd "$stage" && find usr -type f -exec md5sum {} + >DEBIAN/md5sums)

deb="$out/${name}_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
rm -rf "$stage"
echo "built $deb (Depends: $abi, $shlibs)"
