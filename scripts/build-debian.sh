#!/usr/bin/env bash
# Builds the module against Debian's nginx (package nginx-dev): configures a copy of the
# shipped source with Debian's own flags, then builds with NGINX_BUILD_DIR pointing at it.
# The result, build/debian/ngx_http_kafka_module.so, loads into /usr/sbin/nginx.
set -euo pipefail
cd "$(dirname "$0")/.."

src=build/debian/nginx-src
if [ ! -f "$src/objs/ngx_auto_config.h" ]; then
  rm -rf "$src" && mkdir -p build/debian && cp -r /usr/share/nginx/src "$src"
  (cd "$src" && . ./conf_flags && ./configure "${NGX_CONF_FLAGS[@]}" >/dev/null)
fi
NGINX_BUILD_DIR="$PWD/$src/objs" cargo build --release --lib --target-dir target/debian
cp target/debian/release/libngx_http_kafka_module.so build/debian/ngx_http_kafka_module.so
echo "built build/debian/ngx_http_kafka_module.so for $(/usr/sbin/nginx -v 2>&1 | sed 's/.*: //')"
