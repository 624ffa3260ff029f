#!/usr/bin/env bash
# `make run`: a local broker (librdkafka's mock cluster on 127.0.0.1:9092) and nginx with
# nginx/nginx.conf on 127.0.0.1:8080, both in the background under build/run/.
# KAFKA_BROKERS=host:port[,host:port] points nginx at a real cluster instead.
set -euo pipefail
cd "$(dirname "$0")/.."
run=build/run

stop() {
  for f in $run/logs/nginx.pid $run/broker.pid; do
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    if kill -0 "$pid" 2>/dev/null; then
      kill -QUIT "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      kill -TERM "$pid" 2>/dev/null || true
    fi
    rm -f "$f"
  done
}

if [ "${1:-start}" = stop ]; then stop; echo "stopped"; exit 0; fi

stop
mkdir -p $run/conf $run/logs
ln -sfn ../modules $run/modules
ln -sfn ../../sdk $run/sdk
cp -r nginx/. $run/conf/

brokers=${KAFKA_BROKERS:-127.0.0.1:9092}
if [ -z "${KAFKA_BROKERS:-}" ]; then
  nohup build/bin/kafka-dev-broker --port 9092 --topic my-poc-topic-01:3 --topic my-poc-topic-mirror:3 --topic events:3 --topic web-demo:1 \
    >$run/logs/broker.log 2>&1 &
  echo $! >$run/broker.pid
  for _ in $(seq 50); do grep -q listening $run/logs/broker.log && break; sleep 0.1; done
  grep -q listening $run/logs/broker.log || { cat $run/logs/broker.log; exit 1; }
else
  sed -i "s/kafka_brokers .*;/kafka_brokers ${brokers//,/ };/" $run/conf/nginx.conf
fi

build/sbin/nginx -p $run -c conf/nginx.conf -t -q
build/sbin/nginx -p $run -c conf/nginx.conf

cat <<MSG

nginx-kafka is running: nginx on http://127.0.0.1:8080, brokers $brokers.

Post an event (the source document's postdata.json):
  curl -i -H 'Content-Type: application/json' -H 'topic: my-poc-topic-01' \\
       --data-binary @nginx/postdata.json http://127.0.0.1:8080/putmessage

Read it back:
  build/bin/kafka-consume --brokers $brokers --topic my-poc-topic-01 --timeout-ms 3000

The demo site's page, with kc.js from the collector (open it in a browser on this machine):
  http://demo.localhost:8080/
and, after a click or two, its events:
  build/bin/kafka-consume --brokers $brokers --topic web-demo --timeout-ms 3000

An event from a web page of the demo site, by hand (kafka_collect; nginx/sites.json, docs/sites.md):
  curl -i -H 'Host: collect.localhost' -H 'Origin: http://localhost:3000' \\
       --data-binary '{"type":"pageview","url":"http://localhost:3000/"}' \\
       'http://127.0.0.1:8080/collect?key=0123456789abcdef0123456789abcdef'
  build/bin/kafka-consume --brokers $brokers --topic web-demo --timeout-ms 3000

Metrics (Prometheus text; ?format=json for JSON) and readiness:
  curl http://127.0.0.1:8080/metrics
  curl -i http://127.0.0.1:8080/ready

Logs: $run/logs/ (error-collector.log has any event that could not be delivered).
Stop: make stop
MSG
