//! Against tansu, an independent Kafka-compatible broker: the original acceptance test read
//! back by a consumer group, keys, and the source document's unknown-topic test.

mod common;

use std::collections::HashMap;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

fn tansu_bin() -> PathBuf {
    let home = PathBuf::from(std::env::var_os("HOME").unwrap_or_default());
    let cargo_bin = home.join(".cargo/bin/tansu");
    if cargo_bin.exists() {
        cargo_bin
    } else {
        PathBuf::from("tansu")
    }
}

/// A tansu broker with in-memory storage, ended when dropped.
struct Tansu {
    child: Child,
    brokers: String,
}

impl Tansu {
    fn start(topics: &[&str]) -> Tansu {
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(tansu_bin())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tansu runs (make test installs it)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "tansu does not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        for topic in topics {
            let status = Command::new(tansu_bin())
                .args([
                    "topic",
                    "create",
                    topic,
                    "--partitions",
                    "3",
                    "--broker",
                    &url,
                ])
                .stdout(Stdio::null())
                .status()
                .unwrap();
            assert!(status.success(), "tansu topic create {topic}");
        }
        Tansu {
            child,
            brokers: format!("127.0.0.1:{port}"),
        }
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads through a consumer group, as a real pipeline would.
fn consume_group(brokers: &str, topic: &str, want: usize) -> Vec<Record> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("nginx-kafka-test-{}", free_port()))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    read_records(&consumer, want, Duration::from_secs(15))
}

#[test]
fn acceptance_test_read_by_a_consumer_group() {
    let tansu = Tansu::start(&["my-poc-topic-01"]);
    let nginx = Nginx::start_example(&tansu.brokers);
    let body = postdata();
    let mut http = Http::connect(nginx.port);
    for _ in 0..1000 {
        assert_eq!(
            http.post("/putmessage", "my-poc-topic-01", &body).status,
            204
        );
    }
    let records = consume_group(&tansu.brokers, "my-poc-topic-01", 1000);
    assert_eq!(records.len(), 1000);
    assert!(records.iter().all(|r| r.value == body));
}

#[test]
fn keys_keep_a_user_in_one_partition() {
    let tansu = Tansu::start(&["events"]);
    let nginx = Nginx::start_example(&tansu.brokers);
    let mut http = Http::connect(nginx.port);
    for uid in ["a", "b", "c"] {
        for i in 0..30 {
            let r = http.request(
                "POST",
                &format!("/events?uid={uid}"),
                &[],
                format!("{i}").as_bytes(),
            );
            assert_eq!(r.status, 204);
        }
    }
    let records = consume_group(&tansu.brokers, "events", 90);
    assert_eq!(records.len(), 90);
    let mut partition_of = HashMap::new();
    for r in records {
        let key = r.key.expect("keyed");
        assert_eq!(*partition_of.entry(key).or_insert(r.partition), r.partition);
    }
    assert_eq!(partition_of.len(), 3);
}

/// The source document's second test: a topic that does not exist (tansu creates none on its
/// own). Every event is refused or, if answered 204, logged with its payload.
#[test]
fn unknown_topic_lands_in_the_error_log() {
    let tansu = Tansu::start(&["my-poc-topic-01"]);
    let conf = conf_with(
        "kafka_option message.timeout.ms 3000;",
        "error_log logs/collector.log notice;\n\
         location = /putmessage { kafka_ingest; kafka_topic $http_topic; kafka_allowed_topics my-poc-topic-*; }",
    );
    let nginx = Nginx::start_conf(&conf, &tansu.brokers);
    let mut http = Http::connect(nginx.port);
    let mut answered = Vec::new();
    let mut refused = 0;
    for i in 0..20 {
        let body = format!("{{\"lost\":{i}}}").into_bytes();
        let r = http.post("/putmessage", "my-poc-topic-noexist", &body);
        match r.status {
            204 => answered.push(body),
            404 => {
                assert!(r.text().contains("unknown_topic"));
                refused += 1;
            }
            s => panic!("unexpected status {s}: {}", r.text()),
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while undelivered_payloads(&nginx.log("collector.log")).len() < answered.len() {
        assert!(
            Instant::now() < deadline,
            "failures not logged:\n{}",
            nginx.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut logged = undelivered_payloads(&nginx.log("collector.log"));
    logged.sort();
    answered.sort();
    assert_eq!(logged, answered);
    println!(
        "answered 204 and logged: {}, refused 404: {refused}",
        answered.len()
    );
}
