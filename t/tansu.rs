//! Against tansu (0.6.0), an independent Kafka-compatible broker written from the protocol
//! rather than on librdkafka: the original acceptance test read back through a consumer
//! group, an unknown topic (tansu has no topic auto-creation), and keyed events.
//!
//! tansu runs as a child process on a free port with in-memory storage, one per test.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

/// The tansu binary: `TANSU_BIN`, `tansu` on PATH, or ~/.cargo/bin/tansu (where
/// scripts/deps.sh installs it).
fn tansu_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("TANSU_BIN") {
        return PathBuf::from(bin);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let bin = dir.join("tansu");
            if bin.is_file() {
                return bin;
            }
        }
    }
    let home = std::env::var_os("HOME").expect("HOME is set");
    let bin = PathBuf::from(home).join(".cargo/bin/tansu");
    assert!(
        bin.is_file(),
        "tansu is not installed (make test installs it: cargo install tansu@0.6.0)"
    );
    bin
}

/// A tansu broker, our child; killed (that pid only) when dropped.
struct Tansu {
    child: Child,
    dir: TempDir,
    port: u16,
}

impl Tansu {
    fn start() -> Tansu {
        let dir = TempDir::new("tansu");
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let log = fs::File::create(dir.0.join("tansu.log")).unwrap();
        let child = Command::new(tansu_bin())
            .arg("broker")
            .args(["--listener-url", &url])
            .args(["--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .args(["--cluster-id", "nginx-kafka-tests"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("tansu starts");
        let mut tansu = Tansu { child, dir, port };
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = tansu.child.try_wait().unwrap() {
                panic!("tansu exited at start ({status}):\n{}", tansu.log());
            }
            assert!(
                Instant::now() < deadline,
                "tansu does not listen on {port}:\n{}",
                tansu.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        tansu
    }

    fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.0.join("tansu.log")).unwrap_or_default()
    }

    /// `tansu topic create`; tansu creates no topic on its own.
    fn create_topic(&self, name: &str, partitions: i32) {
        let out = Command::new(tansu_bin())
            .args(["topic", "create", name])
            .args(["--partitions", &partitions.to_string()])
            .args(["--broker", &format!("tcp://127.0.0.1:{}", self.port)])
            .stdin(Stdio::null())
            .output()
            .expect("tansu topic create runs");
        assert!(
            out.status.success(),
            "tansu topic create {name}: {}\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // The topic is visible in metadata with every partition before anyone produces.
        wait_for_topic(&self.brokers(), name, partitions, || self.log());
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- tansu log ---\n{}", self.log());
        }
    }
}

fn unique(tag: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("nginx-kafka-{tag}-{}-{nanos}", std::process::id())
}

/// Reads `topic` through a consumer group of its own (subscribe, earliest), committing what
/// it read, until `want` messages arrived or nothing came for `idle`.
fn consume_group(brokers: &str, topic: &str, want: usize, idle: Duration) -> Vec<Record> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("group"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "200")
        .set("session.timeout.ms", "10000")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let records = read_records(&consumer, want, idle);
    let assigned = consumer.assignment().map(|a| a.count()).unwrap_or(0);
    eprintln!(
        "consumer group read {} messages of {topic} with {assigned} partitions assigned",
        records.len()
    );
    records
}

/// The numbers in ab's report.
fn ab_field(report: &str, name: &str) -> Option<u64> {
    report
        .lines()
        .find(|l| l.trim_start().starts_with(name))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

fn have_ab() -> bool {
    Command::new("ab")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// 1000 POSTs of postdata.json: (complete, failed, non-2xx).
fn post_1000(nginx: &Nginx) -> (u64, u64, u64) {
    if have_ab() {
        let out = Command::new("ab")
            .args(["-q", "-T", "application/json"])
            .args(["-H", "topic: my-poc-topic-01", "-n", "1000", "-p"])
            .arg(repo().join("nginx/postdata.json"))
            .arg(format!("http://{}", nginx.url("/putmessage")))
            .output()
            .expect("ab runs");
        let report = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "ab: {}\n{report}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let complete = ab_field(&report, "Complete requests").expect(&report);
        let failed = ab_field(&report, "Failed requests").expect(&report);
        let non_2xx = ab_field(&report, "Non-2xx responses").unwrap_or(0);
        eprintln!(
            "ab: complete {complete}, failed {failed}, non-2xx {non_2xx}, {}",
            report
                .lines()
                .find(|l| l.starts_with("Requests per second"))
                .unwrap_or("")
        );
        (complete, failed, non_2xx)
    } else {
        eprintln!("ab (apt: apache2-utils) is missing; posting over one keep-alive connection");
        let body = postdata();
        let mut http = Http::connect(nginx.port);
        let mut non_2xx = 0;
        for _ in 0..1000 {
            let r = http.request(
                "POST",
                "/putmessage",
                &[
                    ("Content-Type", "application/json"),
                    ("topic", "my-poc-topic-01"),
                ],
                &body,
            );
            if !(200..300).contains(&r.status) {
                non_2xx += 1;
            }
        }
        (1000, 0, non_2xx)
    }
}

/// The source document's test, on the example configuration (lz4, linger.ms 20, two or more
/// workers): 1000 POSTs, and exactly 1000 messages in the topic, read through a consumer
/// group, each byte-equal to postdata.json.
#[test]
fn original_acceptance_test_through_a_consumer_group() {
    let started = Instant::now();
    let tansu = Tansu::start();
    let brokers = tansu.brokers();
    tansu.create_topic("my-poc-topic-01", 3);
    let nginx = Nginx::start_example(&brokers);

    let (complete, failed, non_2xx) = post_1000(&nginx);
    assert_eq!(complete, 1000, "complete requests");
    assert_eq!(failed, 0, "failed requests");
    assert_eq!(non_2xx, 0, "non-2xx responses:\n{}", nginx.logs());

    let records = consume_group(&brokers, "my-poc-topic-01", 1000, Duration::from_secs(20));
    let body = postdata();
    assert_eq!(
        records.len(),
        1000,
        "messages read back\n--- nginx logs ---\n{}",
        nginx.logs()
    );
    for r in &records {
        assert_eq!(r.value, body, "a message differs from postdata.json");
        assert!(r.key.is_none(), "no key was configured");
    }
    let mut per_partition = BTreeMap::new();
    for r in &records {
        *per_partition.entry(r.partition).or_insert(0) += 1;
    }
    eprintln!("per partition: {per_partition:?}");
    assert!(
        per_partition.len() > 1,
        "events without a key spread over partitions: {per_partition:?}"
    );
    let logs = nginx.logs();
    assert!(
        !logs.contains("message not delivered"),
        "nothing failed:\n{logs}"
    );
    for line in logs
        .lines()
        .filter(|l| l.contains("[warn]") || l.contains("[error]"))
    {
        eprintln!("nginx: {line}");
    }
    eprintln!("acceptance test: {:?}", started.elapsed());
}

/// An allowed topic that does not exist on an independent broker (tansu): every request is
/// answered 404 from the first one, nothing is logged as undelivered, and tansu does not
/// create the topic.
#[test]
fn unknown_topic_is_404_from_the_first_event() {
    let started = Instant::now();
    let tansu = Tansu::start();
    let brokers = tansu.brokers();
    // Another topic exists, so the broker is reachable and answers metadata.
    tansu.create_topic("my-poc-topic-01", 3);
    let conf = conf_with(
        "underscores_in_headers on;",
        "server_name localhost;\n\
         error_log logs/error-collector.log notice;\n\
         client_max_body_size 1m;\n\
         client_body_buffer_size 16k;\n\
         error_page 413 @too_large;\n\
         location @too_large {\n\
             default_type application/json;\n\
             return 413 '{\"error\":\"too_large\",\"message\":\"the event is larger than this endpoint accepts\"}';\n\
         }\n\
         location = /putmessage {\n\
             kafka_ingest;\n\
             kafka_topic $http_topic;\n\
             kafka_allowed_topics my-poc-topic-*;\n\
         }",
    );
    let nginx = Nginx::start_conf(&conf, &brokers);
    let body = postdata();
    let topic = "my-poc-topic-noexist";

    // The worker asks tansu's metadata: the very first event is refused, and so is each
    // one after it; nothing is accepted, so nothing is logged as undelivered.
    for _ in 0..5 {
        let r = Http::connect(nginx.port).request(
            "POST",
            "/putmessage",
            &[("Content-Type", "application/json"), ("topic", topic)],
            &body,
        );
        assert_eq!(r.status, 404, "{}\n{}", r.text(), nginx.logs());
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert!(
            r.text().contains("\"error\":\"unknown_topic\""),
            "{}",
            r.text()
        );
    }
    // The topic that exists is taken.
    let r = Http::connect(nginx.port).request(
        "POST",
        "/putmessage",
        &[("topic", "my-poc-topic-01")],
        &body,
    );
    assert_eq!(r.status, 204, "{}", r.text());
    let collector = nginx.log("error-collector.log");
    assert!(undelivered_payloads(&collector).is_empty(), "{collector}");
    // Nothing reached the broker under that name.
    let md_probe: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    let md = md_probe
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .unwrap();
    assert!(
        md.topics()
            .iter()
            .all(|t| t.error().is_some() || t.partitions().is_empty()),
        "tansu created {topic}"
    );
    eprintln!("unknown topic test: {:?}", started.elapsed());
}

/// `kafka_key $arg_uid` (the example's /events): every event of one uid lands in one
/// partition, keyed by the uid, in the order posted.
#[test]
fn events_of_one_uid_share_a_partition() {
    let started = Instant::now();
    let tansu = Tansu::start();
    let brokers = tansu.brokers();
    tansu.create_topic("events", 3);
    let nginx = Nginx::start_example(&brokers);
    let uids = ["a", "b", "c"];
    let mut http = Http::connect(nginx.port);
    let mut posted = Vec::new();
    for n in 0..30 {
        for uid in uids {
            let body = format!("{{\"uid\":\"{uid}\",\"n\":{n}}}").into_bytes();
            let r = http.request("POST", &format!("/events?uid={uid}"), &[], &body);
            assert_eq!(r.status, 204, "{}", r.text());
            posted.push(body);
        }
    }

    let records = consume(&brokers, "events", 90, Duration::from_secs(15));
    assert_eq!(records.len(), 90, "{}", nginx.logs());
    let mut values: Vec<Vec<u8>> = records.iter().map(|r| r.value.clone()).collect();
    values.sort();
    posted.sort();
    assert_eq!(values, posted, "every event once, byte for byte");

    let mut partition_of: HashMap<String, i32> = HashMap::new();
    let mut seq_of: HashMap<String, Vec<u32>> = HashMap::new();
    for r in &records {
        let key = String::from_utf8(r.key.clone().expect("keyed")).unwrap();
        let value = String::from_utf8(r.value.clone()).unwrap();
        assert!(
            value.starts_with(&format!("{{\"uid\":\"{key}\",")),
            "key {key} on {value}"
        );
        let p = *partition_of.entry(key.clone()).or_insert(r.partition);
        assert_eq!(p, r.partition, "uid {key} in two partitions");
        let n: u32 = value
            .rsplit_once(':')
            .unwrap()
            .1
            .trim_end_matches('}')
            .parse()
            .unwrap();
        seq_of.entry(key).or_default().push(n);
    }
    for (key, seq) in &seq_of {
        assert_eq!(seq.len(), 30, "uid {key}");
        assert!(
            seq.windows(2).all(|w| w[0] < w[1]),
            "uid {key} out of order: {seq:?}"
        );
    }
    let mut keys: Vec<_> = partition_of.keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, uids);
    eprintln!("partition of each uid: {partition_of:?}");
    eprintln!("keys test: {:?}", started.elapsed());
}
