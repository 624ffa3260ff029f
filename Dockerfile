# nginx-kafka: nginx 1.28 with the module, built from this source.
#
#   podman build --pull=never -t nginx-kafka .     (docker build works the same)
#   podman run -d -p 8080:8080 -e KAFKA_BROKERS=broker1:9092,broker2:9092 \
#       -v /mnt/efs:/var/log/nginx nginx-kafka
#   podman stop -t 30 CONTAINER                    (longer than kafka_flush_timeout)
#
# The default server (docker/templates/default.conf.template) is the original collector's
# POST /putmessage (topics my-poc-topic-*) on port 8080, with /ready, /alive and /metrics;
# its error log is /var/log/nginx/error-$POD_NAME.log. See "Containers and Kubernetes" in
# the README. BASE names the Debian image (both stages).

ARG BASE=debian:bookworm-slim

# The build: Debian's Rust toolchain (rustc-web), nginx from the source the ngx crate
# vendors, the module and the spool tool.
FROM ${BASE} AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      rustc-web cargo-web build-essential clang libclang-dev libpcre2-dev libssl-dev \
      zlib1g-dev pkg-config python3 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Behind a TLS-intercepting proxy, crates.io's certificate is signed by the proxy's CA: give
# the host's CA bundle as the build secret `cacert` (scripts/container.sh does); it is used
# for the download only and is not in any layer.
RUN --mount=type=secret,id=cacert \
    if [ -s /run/secrets/cacert ]; then export CARGO_HTTP_CAINFO=/run/secrets/cacert; fi \
 && cargo build --release --locked --lib --bin kafka-spool \
 && mkdir /out \
 && cp "$(ls -t target/release/build/nginx-sys-*/out/objs/nginx | head -n 1)" /out/nginx \
 && cp target/release/libngx_http_kafka_module.so /out/ngx_http_kafka_module.so \
 && cp target/release/kafka-spool /out/kafka-spool \
 && strip /out/nginx /out/ngx_http_kafka_module.so /out/kafka-spool

# The image: what nginx and the module link against, envsubst for the templates, nothing else.
FROM ${BASE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libpcre2-8-0 libssl3 zlib1g ca-certificates gettext-base \
 && apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \
 && groupadd --system --gid 101 nginx \
 && useradd --system --uid 101 --gid nginx --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin nginx \
 && mkdir -p /etc/nginx/conf.d /etc/nginx/templates /usr/lib/nginx/modules /var/log/nginx \
      /tmp/nginx \
 && chown nginx:nginx /etc/nginx/conf.d /var/log/nginx /tmp/nginx
COPY --from=build /out/nginx /usr/sbin/nginx
COPY --from=build /out/ngx_http_kafka_module.so /usr/lib/nginx/modules/
COPY --from=build /out/kafka-spool /usr/bin/kafka-spool
COPY docker/nginx.conf /etc/nginx/nginx.conf
COPY docker/templates/ /etc/nginx/templates/
COPY docker/docker-entrypoint.sh /docker-entrypoint.sh
COPY nginx/postdata.json /usr/share/nginx-kafka/postdata.json

USER nginx
# nginx -t at build time, on the default server as rendered with the default environment;
# what the check rendered and logged is removed: each container renders its own.
RUN /docker-entrypoint.sh nginx -p /etc/nginx -c /etc/nginx/nginx.conf -e stderr -t \
 && rm -f /etc/nginx/conf.d/*.conf /var/log/nginx/*

EXPOSE 8080
# QUIT: a graceful stop, in which each worker flushes its producer (kafka_flush_timeout) and
# logs every event it could not deliver before it exits.
STOPSIGNAL SIGQUIT
ENTRYPOINT ["/docker-entrypoint.sh"]
CMD ["nginx", "-p", "/etc/nginx", "-c", "/etc/nginx/nginx.conf", "-e", "stderr", "-g", "daemon off;"]
