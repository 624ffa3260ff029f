//! Kafka unreachable: requests are still answered, nothing answered 2xx is lost (it is in
//! Kafka or, with its payload, in the error log), and delivery resumes without a restart.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;
use rdkafka::mocking::MockCluster;

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn body(tag: &str, i: usize) -> Vec<u8> {
    format!("{{\"{tag}\":{i},\"text\":\"line\\nbreak \\\"quoted\\\" 事件\"}}").into_bytes()
}

#[test]
fn broker_down_then_back() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("outage", 2, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let conf = conf_with(
        "kafka_option message.timeout.ms 2000;\nkafka_option reconnect.backoff.max.ms 200;",
        "error_log logs/collector.log notice;\n\
         location = /in { kafka_ingest; kafka_topic outage; }",
    );
    let nginx = Nginx::start_conf(&conf, &brokers);
    let mut http = Http::connect(nginx.port);

    // Delivered while the broker is up.
    assert_eq!(
        http.request("POST", "/in", &[], &body("before", 0)).status,
        204
    );
    wait_for("the first delivery", Duration::from_secs(10), || {
        consume(&brokers, "outage", 1, Duration::from_millis(500)).len() == 1
    });

    cluster.broker_down(1).unwrap();
    let mut answered = BTreeSet::new();
    for i in 0..50 {
        let b = body("down", i);
        let r = http.request("POST", "/in", &[], &b);
        assert_eq!(
            r.status,
            204,
            "accepted while the broker is down: {}",
            r.text()
        );
        answered.insert(b);
    }
    wait_for("the failures to be logged", Duration::from_secs(20), || {
        undelivered_payloads(&nginx.log("collector.log")).len() >= answered.len()
    });
    let logged: BTreeSet<Vec<u8>> = undelivered_payloads(&nginx.log("collector.log"))
        .into_iter()
        .collect();
    assert_eq!(
        logged, answered,
        "every event answered 204 is in the error log, byte for byte"
    );
    let log = nginx.log("collector.log");
    assert!(
        log.contains("[error]")
            && log.contains("topic=\"outage\"")
            && log.contains("Message timed out")
    );

    cluster.broker_up(1).unwrap();
    let mut after = Vec::new();
    for i in 0..20 {
        let b = body("after", i);
        assert_eq!(http.request("POST", "/in", &[], &b).status, 204);
        after.push(b);
    }
    let mut got = Vec::new();
    wait_for(
        "delivery after the broker came back",
        Duration::from_secs(30),
        || {
            got = consume(&brokers, "outage", 21, Duration::from_secs(2));
            got.len() >= 21
        },
    );
    let values: BTreeSet<Vec<u8>> = got.into_iter().map(|r| r.value).collect();
    for b in &after {
        assert!(
            values.contains(b),
            "an event posted after recovery is missing"
        );
    }
    assert!(values.contains(&body("before", 0)));
}

#[test]
fn full_queue_is_503_with_retry_after() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("full", 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let conf = conf_with(
        "kafka_option queue.buffering.max.messages 5;\nkafka_option message.timeout.ms 2000;",
        "location = /in { kafka_ingest; kafka_topic full; kafka_retry_after 7s; }",
    );
    let nginx = Nginx::start_conf(&conf, &brokers);
    cluster.broker_down(1).unwrap();
    let mut http = Http::connect(nginx.port);
    let mut accepted = BTreeSet::new();
    let mut refused = 0;
    for i in 0..12 {
        let b = body("full", i);
        let r = http.request("POST", "/in", &[], &b);
        match r.status {
            204 => {
                accepted.insert(b);
            }
            503 => {
                assert_eq!(r.header("retry-after"), Some("7"));
                assert!(r.text().contains("\"error\":\"busy\""));
                refused += 1;
            }
            s => panic!("unexpected status {s}"),
        }
    }
    assert_eq!(accepted.len(), 5, "the queue holds five");
    assert_eq!(refused, 7);
    wait_for(
        "the accepted events to be logged",
        Duration::from_secs(20),
        || undelivered_payloads(&nginx.log("error.log")).len() >= 5,
    );
    let logged: BTreeSet<Vec<u8>> = undelivered_payloads(&nginx.log("error.log"))
        .into_iter()
        .collect();
    assert_eq!(
        logged, accepted,
        "only the accepted events are logged, each once"
    );
}

/// A worker that exits flushes for `kafka_flush_timeout`, then logs what is left.
#[test]
fn exit_logs_what_could_not_be_flushed() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("exit", 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let conf = conf_with(
        "kafka_flush_timeout 1s;",
        "location = /in { kafka_ingest; kafka_topic exit; }",
    );
    let mut nginx = Nginx::start_conf(&conf, &brokers);
    cluster.broker_down(1).unwrap();
    let mut http = Http::connect(nginx.port);
    let mut answered = BTreeSet::new();
    for i in 0..30 {
        let b = body("exit", i);
        assert_eq!(http.request("POST", "/in", &[], &b).status, 204);
        answered.insert(b);
    }
    drop(http);
    // With the default message.timeout.ms (300 s) an unbounded flush would hang here; the
    // harness gives up on an nginx that does not exit.
    nginx.quit();
    let log = nginx.log("error.log");
    let logged: BTreeSet<Vec<u8>> = undelivered_payloads(&log).into_iter().collect();
    assert_eq!(logged, answered, "every answered event is logged at exit");
    assert!(
        log.contains("kafka: producer stopped: 30 queued at exit, flush timed out"),
        "{log}"
    );
    assert_eq!(exit_counts(&log), (0, 30), "{log}");
}

/// A client may choose a key that looks like the payload field (`kafka_key $http_x_key`):
/// the logged line still gives back the exact payload and key, read left to right (found by
/// fuzzing the failure line, fuzz/regressions/failure_line/).
#[test]
fn a_key_that_looks_like_a_field_is_logged_unambiguously() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("keys", 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let conf = conf_with(
        "kafka_option message.timeout.ms 1000;",
        "location = /in { kafka_ingest; kafka_topic keys; kafka_key $http_x_key; }",
    );
    let nginx = Nginx::start_conf(&conf, &brokers);
    cluster.broker_down(1).unwrap();
    let key = "u1\" bytes=3 payload=";
    let body = b"{\"real\":\"payload=\\\"x\\\"\"}";
    let r = Http::connect(nginx.port).request("POST", "/in", &[("X-Key", key)], body);
    assert_eq!(r.status, 204);
    wait_for("the failure line", Duration::from_secs(20), || {
        !undelivered_payloads(&nginx.log("error.log")).is_empty()
    });
    let log = nginx.log("error.log");
    let line = log
        .lines()
        .find(|l| l.contains("message not delivered"))
        .unwrap();
    let fields = failure_fields(line).unwrap();
    let get = |n: &str| fields.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    assert_eq!(get("key").as_deref(), Some(key.as_bytes()), "{line}");
    assert_eq!(get("payload").as_deref(), Some(&body[..]), "{line}");
    assert_eq!(undelivered_payloads(&log), vec![body.to_vec()]);
}
