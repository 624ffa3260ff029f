#!/bin/sh
# The image's entrypoint: renders /etc/nginx/templates/*.template into /etc/nginx/conf.d/
# (as the official nginx image does: only the ${VARIABLES} that are set in the environment
# are replaced, so nginx's own $variables stay), then runs the command, nginx by default.
set -eu

: "${POD_NAME:=$(hostname)}"
: "${POD_IP:=$(hostname -i 2>/dev/null | cut -d' ' -f1)}"
: "${KAFKA_BROKERS:=127.0.0.1:9092}"
: "${NGINX_PORT:=8080}"
# kafka_brokers takes one address per argument.
KAFKA_BROKERS_LIST=$(printf '%s' "$KAFKA_BROKERS" | tr ',' ' ')
export POD_NAME POD_IP KAFKA_BROKERS KAFKA_BROKERS_LIST NGINX_PORT

templates=${NGINX_TEMPLATES_DIR:-/etc/nginx/templates}
output=${NGINX_CONF_D:-/etc/nginx/conf.d}
mkdir -p /tmp/nginx
if [ -d "$templates" ]; then
    defined=$(printf '${%s} ' $(env | sed -n 's/^\([A-Za-z_][A-Za-z0-9_]*\)=.*/\1/p'))
    for template in "$templates"/*.template; do
        [ -f "$template" ] || continue
        target="$output/$(basename "$template" .template)"
        envsubst "$defined" <"$template" >"$target"
        echo "docker-entrypoint.sh: rendered $template into $target" >&2
    done
fi

exec "$@"
