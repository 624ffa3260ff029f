//! Topics named by clients: the module never makes a broker create one, refuses a topic the
//! cluster does not have with `404 unknown_topic`, keeps a bounded number per worker
//! (`kafka_max_topics`), and its memory stays flat under a stream of random names.

mod common;

use std::time::Duration;

use common::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::ClientConfig;

const PREFIX_LOCATION: &str = "location = /in {\n\
     kafka_ingest;\n\
     kafka_topic $http_topic;\n\
     kafka_allowed_topics my-poc-topic-*;\n\
   }";

/// The topics the cluster has, as a client without auto-creation sees them.
fn cluster_topics(brokers: &str) -> Vec<String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("allow.auto.create.topics", "false")
        .create()
        .unwrap();
    let md = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .unwrap();
    md.topics().iter().map(|t| t.name().to_string()).collect()
}

fn worker_rss_kb(nginx: &Nginx) -> u64 {
    nginx
        .workers()
        .iter()
        .map(|p| {
            let status = std::fs::read_to_string(format!("/proc/{p}/status")).unwrap_or_default();
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        })
        .sum()
}

/// Finding: a topic that does not exist was accepted (204) and created on the broker.
#[test]
fn unknown_topic_is_404_and_never_created() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("my-poc-topic-01", 2, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let nginx = Nginx::start_conf(&conf_with("", PREFIX_LOCATION), &brokers);
    let mut http = Http::connect(nginx.port);

    for _ in 0..3 {
        let r = http.post("/in", "my-poc-topic-01", b"{\"ok\":1}");
        assert_eq!(r.status, 204, "{}", r.text());
    }
    for _ in 0..3 {
        let r = http.post("/in", "my-poc-topic-nope", b"{\"nope\":1}");
        assert_eq!(r.status, 404, "{}", r.text());
        assert!(
            r.text().contains("\"error\":\"unknown_topic\""),
            "{}",
            r.text()
        );
    }
    let got = consume(&brokers, "my-poc-topic-01", 3, Duration::from_secs(5));
    assert_eq!(got.len(), 3);
    let topics = cluster_topics(&brokers);
    assert!(
        !topics.iter().any(|t| t == "my-poc-topic-nope"),
        "the broker created it: {topics:?}"
    );
}

/// Topics created after a first refusal are taken once the refusal has expired.
#[test]
fn a_topic_created_later_is_taken() {
    let cluster = MockCluster::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let nginx = Nginx::start_conf(&conf_with("", PREFIX_LOCATION), &brokers);
    let mut http = Http::connect(nginx.port);
    assert_eq!(http.post("/in", "my-poc-topic-late", b"1").status, 404);
    cluster.create_topic("my-poc-topic-late", 1, 1).unwrap();
    // The refusal is remembered for 10 s.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let status = http.post("/in", "my-poc-topic-late", b"2").status;
        if status == 204 {
            break;
        }
        assert_eq!(status, 404);
        assert!(std::time::Instant::now() < deadline, "never taken");
        std::thread::sleep(Duration::from_millis(500));
    }
    let got = consume(&brokers, "my-poc-topic-late", 1, Duration::from_secs(5));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].value, b"2");
}

/// `kafka_max_topics`: past the cap, `503 too_many_topics`, logged once per window; topics
/// that do not exist never count.
#[test]
fn topic_cap() {
    let cluster = MockCluster::new(1).unwrap();
    for i in 0..5 {
        cluster
            .create_topic(&format!("my-poc-topic-{i}"), 1, 1)
            .unwrap();
    }
    let brokers = cluster.bootstrap_servers();
    let nginx = Nginx::start_conf(&conf_with("kafka_max_topics 3;", PREFIX_LOCATION), &brokers);
    let mut http = Http::connect(nginx.port);
    for i in 0..20 {
        let r = http.post("/in", &format!("my-poc-topic-missing-{i}"), b"x");
        assert_eq!(r.status, 404);
    }
    for i in 0..3 {
        let r = http.post("/in", &format!("my-poc-topic-{i}"), b"x");
        assert_eq!(r.status, 204, "{}", r.text());
    }
    for _ in 0..5 {
        for i in 3..5 {
            let r = http.post("/in", &format!("my-poc-topic-{i}"), b"x");
            assert_eq!(r.status, 503, "{}", r.text());
            assert!(r.text().contains("\"error\":\"too_many_topics\""));
            assert!(r.header("retry-after").is_some());
        }
    }
    assert_eq!(http.post("/in", "my-poc-topic-0", b"x").status, 204);
    let log = nginx.log("error.log");
    let lines = log.matches("kafka_max_topics topics are in use").count();
    assert!((1..=2).contains(&lines), "{lines} lines:\n{log}");
}

/// Finding: 3,000 distinct names under the prefix grew one worker by 30-65 MB and created
/// 3,000 topics. Now each is refused with 404 and the worker's memory stays flat.
#[test]
fn random_topic_names_keep_memory_flat() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("my-poc-topic-01", 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let nginx = Nginx::start_conf(
        &conf_with("keepalive_requests 100000;", PREFIX_LOCATION),
        &brokers,
    );
    let mut http = Http::connect(nginx.port);
    let mut post_range = |from: usize, to: usize| {
        for i in from..to {
            let r = http.post("/in", &format!("my-poc-topic-r{i:05}"), b"{}");
            assert_eq!(r.status, 404, "{}", r.text());
        }
    };
    post_range(0, 300);
    let before = worker_rss_kb(&nginx);
    post_range(300, 3300);
    let after = worker_rss_kb(&nginx);
    println!("worker RSS after 300 random topics {before} kB, after 3,300 {after} kB");
    assert!(
        after < before + 8 * 1024,
        "worker RSS grew from {before} kB to {after} kB"
    );
    let topics = cluster_topics(&brokers);
    assert_eq!(
        topics,
        vec!["my-poc-topic-01".to_string()],
        "nothing created"
    );
}

/// An operator may let brokers create topics (`allow.auto.create.topics true`): names are
/// then not looked up, and the cap still holds.
#[test]
fn auto_creation_when_the_operator_opts_in() {
    let cluster = MockCluster::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let nginx = Nginx::start_conf(
        &conf_with(
            "kafka_option allow.auto.create.topics true; kafka_max_topics 2;",
            PREFIX_LOCATION,
        ),
        &brokers,
    );
    let mut http = Http::connect(nginx.port);
    assert_eq!(http.post("/in", "my-poc-topic-new", b"made").status, 204);
    let got = consume(&brokers, "my-poc-topic-new", 1, Duration::from_secs(10));
    assert_eq!(got.len(), 1);
    assert_eq!(http.post("/in", "my-poc-topic-new2", b"x").status, 204);
    assert_eq!(http.post("/in", "my-poc-topic-new3", b"x").status, 503);
}

/// The cluster cannot be asked (its broker is down from the start): the first event for a
/// topic waits for the fetch to fail, is accepted, and, never delivered, is logged with its
/// payload; nothing answered 204 is lost.
#[test]
fn unchecked_topics_are_accepted_and_logged_if_undelivered() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("my-poc-topic-01", 1, 1).unwrap();
    cluster.broker_down(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let nginx = Nginx::start_conf(
        &conf_with("kafka_option message.timeout.ms 2000;", PREFIX_LOCATION),
        &brokers,
    );
    let mut http = Http::connect(nginx.port);
    let bodies: Vec<Vec<u8>> = (0..3)
        .map(|i| format!("{{\"u\":{i}}}").into_bytes())
        .collect();
    for b in &bodies {
        assert_eq!(http.post("/in", "my-poc-topic-01", b).status, 204);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while undelivered_payloads(&nginx.log("error.log")).len() < bodies.len() {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            nginx.log("error.log")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = nginx.log("error.log");
    assert_eq!(undelivered_payloads(&log), bodies, "{log}");
    assert!(
        log.contains("kafka: topic \"my-poc-topic-01\" could not be checked, accepted"),
        "{log}"
    );
}
