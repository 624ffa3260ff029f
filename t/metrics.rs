//! Metrics and health: `kafka_metrics` (Prometheus text, checked by promtool and scraped by a
//! real Prometheus; JSON), counters in the shared zone across workers and reloads (under
//! load too), a full zone, the topic cap, label escaping, every worker's gauges, `kafka_ready`
//! following the broker and the topics, and the `$kafka_*` variables in an access log. Every
//! count is checked against what the test sent and what a consumer read back.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use serde_json::Value;

type Cluster = MockCluster<'static, DefaultProducerContext>;

/// A mock cluster with `topics` (name, partitions) created: the module never creates one.
fn cluster(topics: &[(&str, i32)]) -> (Cluster, String) {
    let cluster = MockCluster::new(1).unwrap();
    for (name, partitions) in topics {
        cluster.create_topic(name, *partitions, 1).unwrap();
    }
    let brokers = cluster.bootstrap_servers();
    (cluster, brokers)
}

/// Creates many topics at once. Each mock-cluster command waits for the cluster's thread (about
/// a quarter of a second, measured), which serves the commands queued meanwhile together:
/// 600 topics one by one take minutes, from 60 threads a few seconds.
fn create_topics(cluster: &Cluster, names: &[String]) {
    struct Shared<'a>(&'a Cluster);
    // SAFETY: a mock-cluster command is an op sent to the cluster's own thread and answered
    // on a reply queue (librdkafka's rd_kafka_mock_cluster_cmd): callable from any thread.
    unsafe impl Sync for Shared<'_> {}
    let shared = Shared(cluster);
    let shared = &shared;
    std::thread::scope(|scope| {
        for chunk in names.chunks(names.len().div_ceil(60).max(1)) {
            scope.spawn(move || {
                for name in chunk {
                    shared.0.create_topic(name, 1, 1).unwrap();
                }
            });
        }
    });
}

/// `conf_with`, with `workers` worker processes.
fn conf_workers(workers: usize, http: &str, server: &str) -> String {
    conf_with(http, server).replace(
        "worker_processes 1;",
        &format!("worker_processes {workers};"),
    )
}

const IDLE: Duration = Duration::from_secs(5);
/// How long counters and gauges get to settle: generous, never a measure of speed.
const SETTLE: Duration = Duration::from_secs(40);

const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The text exposition `path` serves, parsed.
fn scrape(nginx: &Nginx, path: &str) -> Exposition {
    let r = get(nginx.port, path);
    assert_eq!(r.status, 200, "{path}: {}", r.text());
    Exposition::parse(&r.text())
}

/// The JSON `path` serves.
fn scrape_json(nginx: &Nginx, path: &str) -> Value {
    let r = get(nginx.port, path);
    assert_eq!(r.status, 200, "{path}: {}", r.text());
    assert!(
        r.header("content-type")
            .is_some_and(|t| t.starts_with("application/json")),
        "{path}: content type {:?}",
        r.header("content-type")
    );
    serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {}", r.text()))
}

/// (location, topic, result) → count, for the non-zero `nginx_kafka_requests_total` samples.
type Requests = BTreeMap<(String, String, String), u64>;

fn requests_of(e: &Exposition) -> Requests {
    e.find("nginx_kafka_requests_total", &[])
        .iter()
        .filter(|s| s.value != 0.0)
        .map(|s| {
            let key = (
                s.label("location").to_string(),
                s.label("topic").to_string(),
                s.label("result").to_string(),
            );
            (key, s.value as u64)
        })
        .collect()
}

fn expect(entries: &[(&str, &str, &str, u64)]) -> Requests {
    entries
        .iter()
        .map(|(l, t, r, n)| ((l.to_string(), t.to_string(), r.to_string()), *n))
        .collect()
}

/// A refusal to provoke: method, path, headers, body, the status expected, how many times.
type Refusal<'a> = (
    &'a str,
    &'a str,
    &'a [(&'a str, &'a str)],
    &'a [u8],
    u16,
    usize,
);

/// A chunked POST: nginx's `client_max_body_size` check of a chunked body happens while the
/// module reads it, so the module answers (and counts) `413 too_large`.
fn post_chunked(port: u16, path: &str, topic: &str, size: usize) -> Response {
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\ntopic: {topic}\r\nTransfer-Encoding: chunked\r\n\r\n\
         {size:x}\r\n{}\r\n0\r\n\r\n",
        "y".repeat(size)
    );
    Http::connect(port).send_raw(request.as_bytes())
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A self-check of the harness, independent of the module: promtool and our Prometheus read
/// a hand-written exposition from a plain nginx `return`.
#[test]
fn harness_prometheus_reads_a_plain_exposition() {
    let conf = conf_with(
        "",
        "location = /m { default_type text/plain; return 200 \"# HELP x_total Things.\\n# TYPE x_total counter\\nx_total{a=\\\"b\\\"} 7\\n\"; }",
    );
    let nginx = Nginx::start_conf(&conf, "127.0.0.1:9");
    let text = get(nginx.port, "/m").text();
    assert_eq!(promtool_check(&text), (true, String::new()));
    assert!(!promtool_check("x_total{ 1\n").0);
    let prometheus = Prometheus::start(nginx.port, "/m");
    prometheus.wait_for_scrape(Duration::from_secs(30));
    let got = prometheus.query("x_total");
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0.get("a").map(String::as_str), Some("b"));
    assert_eq!(got[0].1, 7.0);
}

/// Counts of every outcome, by location and topic, read by promtool and by a real Prometheus
/// from a two-worker nginx: what was sent, nothing else.
#[test]
fn prometheus_scrapes_the_counts() {
    let (_cluster, brokers) = cluster(&[("m-events", 2), ("m-clicks", 1), ("orders-t", 1)]);
    let conf = conf_workers(
        2,
        "keepalive_requests 100000;",
        "location = /api/putmessage {\n\
           kafka_ingest;\n\
           kafka_topic $http_topic;\n\
           kafka_allowed_topics m-*;\n\
           client_max_body_size 1k;\n\
         }\n\
         location = /orders {\n\
           kafka_ingest;\n\
           kafka_topic orders-t;\n\
           kafka_key $arg_k;\n\
           kafka_status_zone orders;\n\
         }\n\
         location = /metrics { kafka_metrics; }",
    );
    let nginx = Nginx::start_conf(&conf, &brokers);
    let port = nginx.port;

    // Accepted: a fresh connection each, so that both workers count.
    let mut sent: BTreeMap<&str, Vec<Vec<u8>>> = BTreeMap::new();
    let mut bytes: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for (topic, n) in [("m-events", 7), ("m-clicks", 4)] {
        for i in 0..n {
            let body = format!("{{\"{topic}\":{i}}}").into_bytes();
            let r = post(port, "/api/putmessage", topic, &body);
            assert_eq!(r.status, 204, "{}", r.text());
            *bytes.entry(("/api/putmessage", topic)).or_default() += body.len() as u64;
            sent.entry(topic).or_default().push(body);
        }
    }
    let mut keys = Vec::new();
    for i in 0..5 {
        let (key, body) = (
            format!("cust-{i}"),
            format!("{{\"order\":{i}}}").into_bytes(),
        );
        let r = Http::connect(port).request("POST", &format!("/orders?k={key}"), &[], &body);
        assert_eq!(r.status, 204, "{}", r.text());
        *bytes.entry(("orders", "orders-t")).or_default() += (body.len() + key.len()) as u64;
        sent.entry("orders-t").or_default().push(body);
        keys.push(key.into_bytes());
    }

    // Refusals, a different number of each so that none can pass for another.
    let mut http = Http::connect(port);
    let refusals: &[Refusal] = &[
        ("GET", "/orders", &[], b"", 405, 1),
        ("POST", "/orders", &[], b"", 400, 2),
        (
            "POST",
            "/api/putmessage",
            &[("topic", "m-a b")],
            b"{}",
            400,
            3,
        ),
        (
            "POST",
            "/api/putmessage",
            &[("topic", "secret")],
            b"{}",
            403,
            4,
        ),
        (
            "POST",
            "/api/putmessage",
            &[("topic", "m-missing")],
            b"{}",
            404,
            2,
        ),
        ("POST", "/api/putmessage", &[], b"{}", 400, 1),
    ];
    for (method, path, headers, body, status, times) in refusals {
        for _ in 0..*times {
            let r = http.request(method, path, headers, body);
            assert_eq!(
                r.status,
                *status,
                "{method} {path} {headers:?}: {}",
                r.text()
            );
        }
    }
    for _ in 0..2 {
        let r = post_chunked(port, "/api/putmessage", "m-events", 2000);
        assert_eq!(r.status, 413, "{}", r.text());
        assert!(r.text().contains("too_large"), "{}", r.text());
    }

    // Every accepted event is in Kafka, byte for byte.
    for (topic, bodies) in &sent {
        let records = consume(&brokers, topic, bodies.len(), IDLE);
        let got: BTreeSet<Vec<u8>> = records.iter().map(|r| r.value.clone()).collect();
        let want: BTreeSet<Vec<u8>> = bodies.iter().cloned().collect();
        assert_eq!(records.len(), bodies.len(), "{topic}");
        assert_eq!(got, want, "{topic}");
        if *topic == "orders-t" {
            let got_keys: BTreeSet<Vec<u8>> =
                records.iter().map(|r| r.key.clone().unwrap()).collect();
            assert_eq!(got_keys, keys.iter().cloned().collect());
        }
    }

    // Deliveries are counted when the workers learn of them.
    let mut text = String::new();
    poll_until("the deliveries to be counted", SETTLE, || {
        text = get(port, "/metrics").text();
        Exposition::parse(&text).sum("nginx_kafka_delivered_total", &[]) == 16.0
    });
    let r = get(port, "/metrics");
    assert_eq!(r.header("content-type"), Some(TEXT_FORMAT));

    // promtool reads it as Prometheus does, and its linter has nothing to say.
    let (ok, printed) = promtool_check(&text);
    assert!(
        ok && printed.trim().is_empty(),
        "promtool check metrics: {printed}\n--- exposition ---\n{text}"
    );
    let e = Exposition::parse(&text);
    for (family, kind) in [
        ("nginx_kafka_requests_total", "counter"),
        ("nginx_kafka_accepted_bytes_total", "counter"),
        ("nginx_kafka_delivered_total", "counter"),
        ("nginx_kafka_failed_total", "counter"),
        ("nginx_kafka_zone_overflow_total", "counter"),
        ("nginx_kafka_zone_slots", "gauge"),
        ("nginx_kafka_producer_up", "gauge"),
        ("nginx_kafka_queue_messages", "gauge"),
    ] {
        // Text format 0.0.4 names a counter's family with its `_total`.
        assert_eq!(
            e.types.get(family).map(String::as_str),
            Some(kind),
            "# TYPE of {family}:\n{text}"
        );
    }

    // A real Prometheus scrapes the location and answers queries with the same counts.
    let prometheus = Prometheus::start(port, "/metrics");
    prometheus.wait_for_scrape(Duration::from_secs(30));
    let mut requests = Requests::new();
    poll_until("prometheus to hold the counts", SETTLE, || {
        requests = prometheus
            .query("nginx_kafka_requests_total != 0")
            .into_iter()
            .map(|(l, v)| {
                let label = |n: &str| l.get(n).cloned().unwrap_or_default();
                (
                    (label("location"), label("topic"), label("result")),
                    v as u64,
                )
            })
            .collect();
        prometheus.query_value("sum(nginx_kafka_delivered_total)") == Some(16.0)
    });

    // too_large comes after the topic was checked but before it was looked up: whatever topic
    // label it has, it is the location's.
    let too_large: Vec<_> = requests
        .iter()
        .filter(|((_, _, result), _)| result == "too_large")
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    assert_eq!(
        too_large.iter().map(|(_, v)| v).sum::<u64>(),
        2,
        "{too_large:?}"
    );
    assert!(
        too_large
            .iter()
            .all(|((l, _, _), _)| l == "/api/putmessage"),
        "{too_large:?}"
    );
    requests.retain(|(_, _, result), _| result != "too_large");
    assert_eq!(
        requests,
        expect(&[
            ("/api/putmessage", "m-events", "accepted", 7),
            ("/api/putmessage", "m-clicks", "accepted", 4),
            ("orders", "orders-t", "accepted", 5),
            ("orders", "", "method_not_allowed", 1),
            ("orders", "", "empty_body", 2),
            ("/api/putmessage", "", "invalid_topic", 3),
            ("/api/putmessage", "", "topic_not_allowed", 4),
            ("/api/putmessage", "", "unknown_topic", 2),
            ("/api/putmessage", "", "no_topic", 1),
        ]),
        "nginx_kafka_requests_total as Prometheus has it"
    );

    let per_set = |metric: &str| -> BTreeMap<(String, String), u64> {
        prometheus
            .query(metric)
            .into_iter()
            .filter(|(_, v)| *v != 0.0)
            .map(|(l, v)| {
                let label = |n: &str| l.get(n).cloned().unwrap_or_default();
                ((label("location"), label("topic")), v as u64)
            })
            .collect()
    };
    let sets = |entries: &[(&str, &str, u64)]| -> BTreeMap<(String, String), u64> {
        entries
            .iter()
            .map(|(l, t, n)| ((l.to_string(), t.to_string()), *n))
            .collect()
    };
    let accepted = sets(&[
        ("/api/putmessage", "m-events", 7),
        ("/api/putmessage", "m-clicks", 4),
        ("orders", "orders-t", 5),
    ]);
    assert_eq!(per_set("nginx_kafka_delivered_total"), accepted);
    assert_eq!(
        per_set("nginx_kafka_accepted_bytes_total"),
        bytes
            .iter()
            .map(|((l, t), n)| ((l.to_string(), t.to_string()), *n))
            .collect(),
        "value and key bytes"
    );
    assert_eq!(per_set("nginx_kafka_failed_total"), BTreeMap::new());
    let failed_series = prometheus.query("nginx_kafka_failed_total");
    assert!(
        failed_series.len() >= 3,
        "failed_total has a series per set: {failed_series:?}"
    );

    // The zone: its size, the sets counted, no overflow.
    // The zone's usable bytes: the default 1m less nginx's slab pool header (a page or two).
    let size = prometheus
        .query_value("nginx_kafka_zone_size_bytes")
        .unwrap();
    assert!(
        (1048576.0 - 16384.0..=1048576.0).contains(&size),
        "kafka_metrics_zone defaults to 1m: {size}"
    );
    let used = prometheus
        .query_value("nginx_kafka_zone_slots_used")
        .unwrap();
    let slots = prometheus.query_value("nginx_kafka_zone_slots").unwrap();
    assert!(used >= 5.0 && used <= slots, "slots used {used} of {slots}");
    assert_eq!(
        prometheus.query_value("nginx_kafka_zone_overflow_total"),
        Some(0.0)
    );

    // Each worker: producer up, one state at a time, a queue limit, a broker up.
    let live: BTreeSet<String> = nginx.workers().iter().map(|p| p.to_string()).collect();
    poll_until("both producers to be up", SETTLE, || {
        let up = prometheus.query("nginx_kafka_producer_up == 1");
        up.iter()
            .map(|(l, _)| l["pid"].clone())
            .collect::<BTreeSet<_>>()
            == live
    });
    let states = prometheus.query("nginx_kafka_producer_state == 1");
    assert_eq!(states.len(), 2, "{states:?}");
    assert!(states.iter().all(|(l, _)| l["state"] == "up"), "{states:?}");
    let limits = prometheus.query("nginx_kafka_queue_max_messages");
    assert_eq!(limits.len(), 2, "{limits:?}");
    assert!(limits.iter().all(|(_, v)| *v > 0.0), "{limits:?}");
    let brokers_up = prometheus.query("sum by (pid) (nginx_kafka_broker_up)");
    assert_eq!(brokers_up.len(), 2, "{brokers_up:?}");
    assert!(brokers_up.iter().all(|(_, v)| *v >= 1.0), "{brokers_up:?}");

    let pid = prometheus.pid();
    drop(prometheus);
    // SAFETY: probes (signal 0) the pid of the Prometheus this test started.
    assert_ne!(unsafe { libc::kill(pid, 0) }, 0, "prometheus {pid} stopped");
}

/// The JSON form and the text form say the same: every counter set, the zone, the workers.
fn assert_json_agrees(text: &Exposition, json: &Value) {
    let mut from_json = Requests::new();
    let locations = json["locations"].as_object().expect("\"locations\" object");
    for (location, topics) in locations {
        for (topic, set) in topics.as_object().expect("topics object") {
            for (result, n) in set["requests"].as_object().expect("\"requests\" object") {
                let n = n.as_u64().expect("a count");
                if n != 0 {
                    from_json.insert((location.clone(), topic.clone(), result.clone()), n);
                }
            }
            let labels = [("location", location.as_str()), ("topic", topic.as_str())];
            for (key, metric) in [
                ("accepted_bytes", "nginx_kafka_accepted_bytes_total"),
                ("delivered", "nginx_kafka_delivered_total"),
                ("failed", "nginx_kafka_failed_total"),
            ] {
                assert_eq!(
                    set[key].as_u64(),
                    Some(text.sum(metric, &labels) as u64),
                    "{key} of {location} {topic}: {set}"
                );
            }
        }
    }
    assert_eq!(from_json, requests_of(text), "requests, JSON against text");

    let zone = &json["zone"];
    for (key, metric) in [
        ("slots", "nginx_kafka_zone_slots"),
        ("slots_used", "nginx_kafka_zone_slots_used"),
        ("overflow", "nginx_kafka_zone_overflow_total"),
    ] {
        assert_eq!(
            zone[key].as_u64(),
            Some(text.sum(metric, &[]) as u64),
            "zone {key}: {zone}"
        );
    }

    let json_pids: BTreeSet<String> = json["workers"]
        .as_array()
        .expect("\"workers\" array")
        .iter()
        .map(|w| w["pid"].to_string())
        .collect();
    let text_pids: BTreeSet<String> = text
        .find("nginx_kafka_producer_up", &[])
        .iter()
        .map(|s| s.label("pid").to_string())
        .collect();
    assert_eq!(json_pids, text_pids, "workers, JSON against text");
}

/// Counters live in shared memory: a reload's new workers go on counting from where the old
/// ones stopped. The JSON form agrees with the text form.
#[test]
fn counters_survive_reload() {
    let (_cluster, brokers) = cluster(&[("reload-m", 2)]);
    let conf = conf_workers(
        2,
        "keepalive_requests 100000;",
        "location = /in { kafka_ingest; kafka_topic reload-m; }\n\
         location = /metrics { kafka_metrics; }\n\
         location = /metrics.json { kafka_metrics json; }",
    );
    let nginx = Nginx::start_conf(&conf, &brokers);
    let (n, m) = (10, 15);
    let mut bodies = Vec::new();
    let mut send = |count: usize, tag: &str| {
        for i in 0..count {
            let body = format!("{{\"{tag}\":{i}}}").into_bytes();
            let r = post(nginx.port, "/in", "", &body);
            assert_eq!(r.status, 204, "{}", r.text());
            bodies.push(body);
        }
    };
    send(n, "before");
    assert_eq!(consume(&brokers, "reload-m", n, IDLE).len(), n);
    poll_until("the first deliveries to be counted", SETTLE, || {
        scrape(&nginx, "/metrics").sum("nginx_kafka_delivered_total", &[]) == n as f64
    });

    let old_workers = nginx.workers();
    nginx.reload();
    send(m, "after");
    let records = consume(&brokers, "reload-m", n + m, IDLE);
    let got: BTreeSet<Vec<u8>> = records.into_iter().map(|r| r.value).collect();
    assert_eq!(
        got,
        bodies.iter().cloned().collect(),
        "every event in Kafka"
    );

    let set = [("location", "/in"), ("topic", "reload-m")];
    let mut e = Exposition::default();
    poll_until("all deliveries to be counted", SETTLE, || {
        e = scrape(&nginx, "/metrics");
        e.sum("nginx_kafka_delivered_total", &set) == (n + m) as f64
    });
    let total_bytes: usize = bodies.iter().map(Vec::len).sum();
    assert_eq!(
        requests_of(&e),
        expect(&[("/in", "reload-m", "accepted", (n + m) as u64)])
    );
    assert_eq!(
        e.sum("nginx_kafka_accepted_bytes_total", &set),
        total_bytes as f64
    );
    assert_eq!(e.sum("nginx_kafka_failed_total", &set), 0.0);

    // The workers shown are the live ones; the old ones are gone or at least not "up".
    let live: BTreeSet<String> = nginx.workers().iter().map(|p| p.to_string()).collect();
    poll_until("the new workers' gauges", SETTLE, || {
        let e = scrape(&nginx, "/metrics");
        let up: BTreeSet<String> = e
            .find("nginx_kafka_producer_up", &[])
            .iter()
            .filter(|s| s.value == 1.0)
            .map(|s| s.label("pid").to_string())
            .collect();
        up == live
    });
    for old in &old_workers {
        let e = scrape(&nginx, "/metrics");
        let up = e.sum("nginx_kafka_producer_up", &[("pid", &old.to_string())]);
        assert_eq!(up, 0.0, "old worker {old} still up after the reload");
    }

    // JSON, by query argument and by `kafka_metrics json`, agrees with the text.
    for path in ["/metrics?format=json", "/metrics.json"] {
        let json = scrape_json(&nginx, path);
        let text = scrape(&nginx, "/metrics");
        let in_json = &json["locations"]["/in"]["reload-m"];
        assert_eq!(in_json["requests"]["accepted"], (n + m) as u64, "{json}");
        assert_eq!(in_json["delivered"], (n + m) as u64, "{json}");
        assert_eq!(in_json["accepted_bytes"], total_bytes as u64, "{json}");
        assert_eq!(in_json["failed"], 0, "{json}");
        assert_json_agrees(&text, &json);
        let workers = json["workers"].as_array().unwrap();
        assert_eq!(workers.len(), 2, "{json}");
        for w in workers {
            assert_eq!(w["state"], "up", "{w}");
            assert!(w["worker"].is_u64() && w["in_flight"].is_u64(), "{w}");
            assert!(w["queue"].is_object() && w["brokers"].is_array(), "{w}");
            assert!(w["last_error"].is_null(), "{w}");
        }
    }
}

/// Under load from several clients, across two reloads (old workers flushing while new ones
/// count): every `204` is counted once as accepted, and once as delivered.
#[test]
fn counts_under_load_across_reloads() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let (_cluster, brokers) = cluster(&[("load-m", 3)]);
    let conf = conf_workers(
        2,
        "keepalive_requests 100000;",
        "location = /in { kafka_ingest; kafka_topic load-m; }\n\
         location = /metrics { kafka_metrics; }",
    );
    let nginx = Nginx::start_conf(&conf, &brokers);
    let port = nginx.port;
    let stop = AtomicBool::new(false);
    let answered = AtomicU64::new(0);
    let refused = AtomicU64::new(0);
    // Requests whose connection broke: nginx closes idle keep-alive connections of an exiting
    // worker, so these were almost surely not taken, but the test cannot know.
    let broken = AtomicU64::new(0);
    std::thread::scope(|scope| {
        for c in 0..3 {
            let (stop, answered, refused, broken) = (&stop, &answered, &refused, &broken);
            scope.spawn(move || {
                // A connection that breaks (its worker exiting) is replaced.
                let mut http = None;
                for n in 0..100_000u32 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let body = format!("{{\"client\":{c},\"seq\":{n}}}");
                    let conn = http.get_or_insert_with(|| Http::connect(port));
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        conn.request("POST", "/in", &[], body.as_bytes()).status
                    }));
                    match result {
                        Ok(204) => {
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(_) => {
                            refused.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => {
                            broken.fetch_add(1, Ordering::Relaxed);
                            http = None;
                        }
                    }
                }
            });
        }
        std::thread::sleep(Duration::from_millis(700));
        for _ in 0..2 {
            nginx.reload();
            std::thread::sleep(Duration::from_millis(700));
        }
        stop.store(true, Ordering::Relaxed);
    });
    let answered = answered.load(Ordering::Relaxed);
    assert!(answered >= 300, "enough load to mean something: {answered}");
    assert_eq!(refused.load(Ordering::Relaxed), 0);

    let broken = broken.load(Ordering::Relaxed);
    let set = [("location", "/in"), ("topic", "load-m")];
    let mut e = Exposition::default();
    poll_until("the deliveries to be counted", SETTLE, || {
        e = scrape(&nginx, "/metrics");
        let accepted = e.sum(
            "nginx_kafka_requests_total",
            &[set[0], set[1], ("result", "accepted")],
        );
        accepted >= answered as f64 && e.sum("nginx_kafka_delivered_total", &set) == accepted
    });
    let requests = requests_of(&e);
    let accepted = requests
        .get(&("/in".into(), "load-m".into(), "accepted".into()))
        .copied()
        .unwrap_or(0);
    assert_eq!(requests.len(), 1, "accepted only: {requests:?}");
    assert!(
        (answered..=answered + broken).contains(&accepted),
        "every 204 counted once: {accepted} counted, {answered} answered, {broken} broken"
    );
    assert_eq!(e.sum("nginx_kafka_failed_total", &set), 0.0);
    let in_kafka = consume(&brokers, "load-m", accepted as usize, IDLE).len() as u64;
    assert_eq!(in_kafka, accepted, "Kafka has each counted event once");
}

/// Events accepted while the broker is down and then timed out count as failed, and the
/// worker shows when its last delivery error happened.
#[test]
fn failed_and_last_error() {
    let (cluster, brokers) = cluster(&[("fail-m", 1)]);
    let conf = conf_with(
        "kafka_option message.timeout.ms 2000;\nkafka_option reconnect.backoff.max.ms 200;",
        "location = /in { kafka_ingest; kafka_topic fail-m; }\n\
         location = /metrics { kafka_metrics; }",
    );
    let nginx = Nginx::start_conf(&conf, &brokers);
    let started = unix_now();
    let mut http = Http::connect(nginx.port);
    for i in 0..3 {
        let r = http.request("POST", "/in", &[], format!("{{\"up\":{i}}}").as_bytes());
        assert_eq!(r.status, 204);
    }
    assert_eq!(consume(&brokers, "fail-m", 3, IDLE).len(), 3);
    poll_until("the first deliveries to be counted", SETTLE, || {
        scrape(&nginx, "/metrics").sum("nginx_kafka_delivered_total", &[]) == 3.0
    });
    let e = scrape(&nginx, "/metrics");
    assert!(
        e.find("nginx_kafka_last_delivery_error_timestamp_seconds", &[])
            .is_empty(),
        "no delivery error yet"
    );

    cluster.broker_down(1).unwrap();
    for i in 0..10 {
        let r = http.request("POST", "/in", &[], format!("{{\"down\":{i}}}").as_bytes());
        assert_eq!(r.status, 204, "{}", r.text());
    }
    let set = [("location", "/in"), ("topic", "fail-m")];
    let mut e = Exposition::default();
    // The counters move at once; the last error comes with the worker's gauges, published
    // with each statistics interval.
    poll_until("the failures and the last error", SETTLE, || {
        e = scrape(&nginx, "/metrics");
        e.sum("nginx_kafka_failed_total", &set) >= 10.0
            && !e
                .find("nginx_kafka_last_delivery_error_timestamp_seconds", &[])
                .is_empty()
    });
    let accepted = e.sum(
        "nginx_kafka_requests_total",
        &[set[0], set[1], ("result", "accepted")],
    );
    let delivered = e.sum("nginx_kafka_delivered_total", &set);
    let failed = e.sum("nginx_kafka_failed_total", &set);
    assert_eq!(
        (accepted, delivered, failed),
        (13.0, 3.0, 10.0),
        "accepted = delivered + failed"
    );
    assert_eq!(
        undelivered_payloads(&nginx.log("error.log")).len(),
        10,
        "each failure is logged too"
    );

    let last = e.find("nginx_kafka_last_delivery_error_timestamp_seconds", &[]);
    assert_eq!(last.len(), 1, "one worker, one last error: {last:?}");
    let (error, time) = (last[0].label("error").to_string(), last[0].value);
    assert!(error.contains("TIMED_OUT"), "the error's name: {error}");
    assert!(
        time >= started.floor() - 1.0 && time <= unix_now() + 1.0,
        "a Unix time within this test: {time} (test started {started})"
    );
    assert_eq!(last[0].label("pid"), nginx.workers()[0].to_string());

    let json = scrape_json(&nginx, "/metrics?format=json");
    let worker = &json["workers"][0];
    assert_eq!(worker["last_error"]["name"], error.as_str(), "{json}");
    assert_eq!(worker["last_error"]["time"].as_f64(), Some(time), "{json}");
    assert_eq!(json["locations"]["/in"]["fail-m"]["failed"], 10, "{json}");
    assert_json_agrees(&scrape(&nginx, "/metrics"), &json);
    assert_eq!(
        promtool_check(&get(nginx.port, "/metrics").text()),
        (true, String::new())
    );
}

/// The smallest zone cannot hold a set per topic: the rest is counted under
/// `location="other",topic="other"`, nothing is lost in counting, the error log says so,
/// and nothing crashes.
#[test]
fn zone_full_goes_to_other() {
    let cluster = MockCluster::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let conf = conf_workers(
        2,
        "kafka_metrics_zone 256k;\nkafka_max_topics 100000;\nkeepalive_requests 100000;",
        "location = /in { kafka_ingest; kafka_topic $arg_t; kafka_allowed_topics t.*; }\n\
         location = /metrics { kafka_metrics; }",
    );
    let nginx = Nginx::start_conf(&conf, &brokers);
    let e = scrape(&nginx, "/metrics");
    let size = e.sum("nginx_kafka_zone_size_bytes", &[]);
    assert!(
        (262144.0 - 16384.0..=262144.0).contains(&size),
        "256k: {size}"
    );
    let slots = e.sum("nginx_kafka_zone_slots", &[]) as usize;
    assert!(
        (1..4000).contains(&slots),
        "a 256k zone holds a bounded number of sets: {slots}"
    );
    // More topics than sets, whatever a set costs.
    let topics = (slots + 100).max(600);
    let names: Vec<String> = (0..topics).map(|i| format!("t.{i:05}")).collect();
    create_topics(&cluster, &names);

    let mut http = [Http::connect(nginx.port), Http::connect(nginx.port)];
    for (i, name) in names.iter().enumerate() {
        let r = http[i % 2].request("POST", &format!("/in?t={name}"), &[], b"{\"z\":1}");
        assert_eq!(r.status, 204, "{name}: {}", r.text());
    }

    let mut e = Exposition::default();
    poll_until("every delivery to be counted", SETTLE, || {
        e = scrape(&nginx, "/metrics");
        e.sum("nginx_kafka_delivered_total", &[]) == topics as f64
    });
    let accepted = [("result", "accepted")];
    assert_eq!(
        e.sum("nginx_kafka_requests_total", &accepted),
        topics as f64,
        "every accepted request is counted somewhere"
    );
    let other = [("location", "other"), ("topic", "other")];
    let in_other = e.sum(
        "nginx_kafka_requests_total",
        &[other[0], other[1], accepted[0]],
    );
    assert!(in_other > 0.0, "some requests counted under other/other");
    assert_eq!(
        e.sum("nginx_kafka_accepted_bytes_total", &[]),
        (7 * topics) as f64,
        "every accepted byte is counted somewhere"
    );
    assert_eq!(
        e.sum("nginx_kafka_zone_slots_used", &[]),
        e.sum("nginx_kafka_zone_slots", &[]),
        "the zone is full"
    );
    assert!(e.sum("nginx_kafka_zone_overflow_total", &[]) >= 1.0);
    // Each topic that has its own set, has it once, with its one request.
    let own: Vec<_> = e
        .find("nginx_kafka_requests_total", &accepted)
        .into_iter()
        .filter(|s| s.label("location") == "/in")
        .collect();
    let names: BTreeSet<&str> = own.iter().map(|s| s.label("topic")).collect();
    assert_eq!(names.len(), own.len(), "one set per topic");
    assert!(own.iter().all(|s| s.value == 1.0));
    assert_eq!(own.len() as f64 + in_other, topics as f64);

    let log = nginx.log("error.log");
    assert!(
        log.lines()
            .any(|l| l.contains("kafka_metrics_zone") && l.contains("is full")),
        "the error log names the full zone"
    );
    assert_eq!(
        promtool_check(&get(nginx.port, "/metrics").text()),
        (true, String::new())
    );
    nginx.check_logs();
}

/// `kafka_max_topics` also bounds the topic labels of a location: with two workers each
/// producing to two topics, the location has seen four, and the last two are `other`.
#[test]
fn topics_past_the_cap_are_other() {
    let (_cluster, brokers) = cluster(&[("c.1", 1), ("c.2", 1), ("c.3", 1), ("c.4", 1)]);
    // reuseport: the kernel spreads connections over both workers.
    let conf = conf_workers(
        2,
        "kafka_max_topics 2;\nkeepalive_requests 100000;",
        "location = /in { kafka_ingest; kafka_topic $http_topic; kafka_allowed_topics c.*; }\n\
         location = /pid { return 200 $pid; }\n\
         location = /metrics { kafka_metrics; }",
    )
    .replace(
        "listen 127.0.0.1:{port};",
        "listen 127.0.0.1:{port} reuseport;",
    );
    let nginx = Nginx::start_conf(&conf, &brokers);

    // One keep-alive connection to each worker.
    let mut by_pid: BTreeMap<String, Http> = BTreeMap::new();
    for _ in 0..200 {
        let mut http = Http::connect(nginx.port);
        let pid = http.request("GET", "/pid", &[], b"").text();
        by_pid.entry(pid).or_insert(http);
        if by_pid.len() == 2 {
            break;
        }
    }
    assert_eq!(by_pid.len(), 2, "connections reach both workers");
    let mut conns: Vec<Http> = by_pid.into_values().collect();
    for (conn, topics) in [(0, ["c.1", "c.2"]), (1, ["c.3", "c.4"])] {
        for topic in topics {
            let r = conns[conn].post("/in", topic, b"{}");
            assert_eq!(r.status, 204, "{topic}: {}", r.text());
        }
    }
    let mut e = Exposition::default();
    poll_until("the deliveries to be counted", SETTLE, || {
        e = scrape(&nginx, "/metrics");
        e.sum("nginx_kafka_delivered_total", &[]) == 4.0
    });
    let accepted: BTreeMap<String, u64> = e
        .find("nginx_kafka_requests_total", &[("result", "accepted")])
        .iter()
        .filter(|s| s.value != 0.0)
        .map(|s| (s.label("topic").to_string(), s.value as u64))
        .collect();
    assert_eq!(
        accepted,
        [("c.1", 1), ("c.2", 1), ("other", 2)]
            .iter()
            .map(|(t, n)| (t.to_string(), *n))
            .collect(),
        "the first two topics by name, the rest as other"
    );
    assert_eq!(
        e.sum("nginx_kafka_delivered_total", &[("topic", "other")]),
        2.0
    );

    // A worker past its own cap refuses the topic; the refusal is counted too.
    let r = conns[0].post("/in", "c.3", b"{}");
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("too_many_topics"), "{}", r.text());
    let e = scrape(&nginx, "/metrics");
    let refused = e.find(
        "nginx_kafka_requests_total",
        &[("location", "/in"), ("result", "too_many_topics")],
    );
    assert_eq!(
        refused.iter().map(|s| s.value).sum::<f64>(),
        1.0,
        "{refused:?}"
    );
    // The worker refuses before it looks the topic up, so the topic is not named.
    assert!(
        refused
            .iter()
            .all(|s| ["", "other"].contains(&s.label("topic"))),
        "{refused:?}"
    );
}

/// The readiness answer of one fresh connection: (status, JSON body).
fn ready(port: u16) -> (u16, Value) {
    let r = get(port, "/ready");
    let json = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    (r.status, json)
}

/// `kafka_ready` is 503 `no_broker` while the broker is down and 200 again once it is back,
/// without a restart; the liveness location answers throughout.
#[test]
fn readiness_follows_the_broker() {
    let (cluster, brokers) = cluster(&[("ready-t", 1)]);
    let conf = conf_with(
        "kafka_option reconnect.backoff.max.ms 200;",
        "location = /in { kafka_ingest; kafka_topic ready-t; }\n\
         location = /ready { kafka_ready; }\n\
         location = /alive { return 200; }\n\
         location = /metrics { kafka_metrics; }",
    );
    let nginx = Nginx::start_conf(&conf, &brokers);
    let (master, workers) = (nginx.pid(), nginx.workers());
    let alive = || assert_eq!(get(nginx.port, "/alive").status, 200, "liveness");

    let mut last = (0, Value::Null);
    poll_until("ready with the broker up", Duration::from_secs(20), || {
        alive();
        last = ready(nginx.port);
        last.0 == 200
    });
    assert_eq!(last.1, serde_json::json!({"ready": true}));
    assert_eq!(
        get(nginx.port, "/ready").header("content-type"),
        Some("application/json")
    );
    assert_eq!(post(nginx.port, "/in", "", b"{}").status, 204);

    cluster.broker_down(1).unwrap();
    poll_until(
        "not ready with the broker down",
        Duration::from_secs(20),
        || {
            alive();
            last = ready(nginx.port);
            last.0 == 503
        },
    );
    let r = get(nginx.port, "/ready");
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["ready"], false, "{body}");
    assert_eq!(body["reason"], "no_broker", "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    // The metrics say the same.
    let e = scrape(&nginx, "/metrics");
    assert_eq!(e.sum("nginx_kafka_producer_up", &[]), 0.0);
    assert_eq!(e.sum("nginx_kafka_broker_up", &[]), 0.0);
    assert_eq!(
        e.sum("nginx_kafka_producer_state", &[("state", "down")]),
        1.0
    );

    cluster.broker_up(1).unwrap();
    poll_until(
        "ready again with the broker back",
        Duration::from_secs(30),
        || {
            alive();
            last = ready(nginx.port);
            last.0 == 200
        },
    );
    assert_eq!(last.1, serde_json::json!({"ready": true}));
    assert_eq!(nginx.pid(), master);
    assert_eq!(nginx.workers(), workers, "the same workers, no restart");
    assert_eq!(post(nginx.port, "/in", "", b"{}").status, 204);
    assert_eq!(consume(&brokers, "ready-t", 2, IDLE).len(), 2);
}

/// A fixed topic the cluster does not have makes the worker not ready (`unknown_topic`)
/// until the topic is created. No `kafka_metrics` here: readiness works without the zone.
#[test]
fn readiness_needs_the_fixed_topics() {
    let (cluster, brokers) = cluster(&[("ready-here", 1)]);
    let conf = conf_with(
        "",
        "location = /a { kafka_ingest; kafka_topic ready-here; }\n\
         location = /b { kafka_ingest; kafka_topic ready-later; }\n\
         location = /any { kafka_ingest; kafka_topic $http_topic; kafka_allowed_topics r*; }\n\
         location = /ready { kafka_ready; }",
    );
    let nginx = Nginx::start_conf(&conf, &brokers);
    let mut last = (0, Value::Null);
    poll_until("unknown_topic", Duration::from_secs(20), || {
        last = ready(nginx.port);
        last.0 == 503 && last.1["reason"] == "unknown_topic"
    });
    assert_eq!(last.1["ready"], false, "{}", last.1);
    assert!(
        last.1["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{}",
        last.1
    );
    // Still not ready a while later: the answer is not a start-up state.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(ready(nginx.port).1["reason"], "unknown_topic");

    cluster.create_topic("ready-later", 1, 1).unwrap();
    poll_until(
        "ready once the topic exists",
        Duration::from_secs(40),
        || {
            last = ready(nginx.port);
            last.0 == 200
        },
    );
    assert_eq!(last.1, serde_json::json!({"ready": true}));
}

/// `$kafka_result`, `$kafka_topic`, `$kafka_key` and `$kafka_bytes` in an access log, one
/// request per outcome.
#[test]
fn variables_in_access_log() {
    let (_cluster, brokers) = cluster(&[("v-a", 1)]);
    let conf = conf_with(
        "keepalive_requests 100000;\n\
         log_format kafka '$arg_n|$kafka_result|$kafka_topic|$kafka_key|$kafka_bytes|$status';",
        "access_log logs/kafka.log kafka;\n\
         location = /in {\n\
           kafka_ingest;\n\
           kafka_topic $http_topic;\n\
           kafka_allowed_topics v-*;\n\
           kafka_key $arg_k;\n\
           client_max_body_size 100;\n\
         }\n\
         location = /alive { return 200; }",
    );
    let nginx = Nginx::start_conf(&conf, &brokers);
    let port = nginx.port;
    let mut http = Http::connect(port);
    let topic = |t: &'static str| -> Vec<(&'static str, &'static str)> { vec![("topic", t)] };

    // (n, status) for each request; the log line is matched by n.
    let mut statuses = BTreeMap::new();
    let mut send = |n: u32, method: &str, path: &str, headers: Vec<(&str, &str)>, body: &[u8]| {
        let r = http.request(method, path, &headers, body);
        statuses.insert(n, r.status);
    };
    send(1, "POST", "/in?n=1&k=user-1", topic("v-a"), b"hello");
    send(2, "POST", "/in?n=2", topic("v-a"), b"{\"x\":1}");
    send(3, "GET", "/in?n=3", vec![], b"");
    send(4, "POST", "/in?n=4", topic("v-a"), b"");
    send(5, "POST", "/in?n=5", vec![], b"{}");
    send(6, "POST", "/in?n=6", topic("v-a b"), b"{}");
    send(7, "POST", "/in?n=7", topic("secret"), b"{}");
    send(8, "POST", "/in?n=8", topic("v-missing"), b"{}");
    send(11, "GET", "/alive?n=11", vec![], b"");
    statuses.insert(9, post_chunked(port, "/in?n=9", "v-a", 200).status);
    // Declared over client_max_body_size: nginx refuses it before the module runs.
    statuses.insert(
        10,
        Http::connect(port)
            .request("POST", "/in?n=10", &[("topic", "v-a")], &[b'x'; 200])
            .status,
    );

    // nginx writes `-` for a variable without a value and nothing for an empty one: both are
    // read as empty here.
    let mut lines: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    poll_until("eleven access-log lines", Duration::from_secs(10), || {
        lines = nginx
            .log("kafka.log")
            .lines()
            .map(|l| {
                l.split('|')
                    .map(|f| if f == "-" { "" } else { f }.to_string())
                    .collect::<Vec<_>>()
            })
            .filter_map(|f| Some((f[0].parse().ok()?, f)))
            .collect();
        lines.len() == 11
    });
    let whole = nginx.log("kafka.log");
    let fields = |n: u32| lines[&n][1..].to_vec();
    assert_eq!(
        fields(1),
        ["accepted", "v-a", "user-1", "11", "204"],
        "value and key bytes:\n{whole}"
    );
    assert_eq!(
        fields(2),
        ["accepted", "v-a", "", "7", "204"],
        "no key:\n{whole}"
    );
    // n → (result, topic or None when not checked, status); no bytes queued for a refusal.
    let expected: &[(u32, &str, Option<&str>, u16)] = &[
        (3, "method_not_allowed", None, 405),
        (4, "empty_body", Some("v-a"), 400),
        (5, "no_topic", Some(""), 400),
        (6, "invalid_topic", Some("v-a b"), 400),
        (7, "topic_not_allowed", Some("secret"), 403),
        (8, "unknown_topic", Some("v-missing"), 404),
        (9, "too_large", Some("v-a"), 413),
    ];
    for (n, result, topic, status) in expected {
        let f = fields(*n);
        assert_eq!(statuses[n], *status, "request {n}");
        assert_eq!(f[0], *result, "request {n}:\n{whole}");
        if let Some(topic) = topic {
            assert_eq!(f[1], *topic, "request {n}:\n{whole}");
        }
        assert_eq!(f[3], "0", "request {n}: no bytes queued:\n{whole}");
        assert_eq!(f[4], status.to_string(), "request {n}");
    }
    // Requests that never reached the Kafka step have no result: one nginx refused before
    // the module ran, one to a location without kafka_ingest.
    assert_eq!(statuses[&10], 413);
    assert_eq!(
        (fields(10)[0].as_str(), fields(10)[4].as_str()),
        ("", "413"),
        "{whole}"
    );
    assert_eq!(fields(11)[..2], ["", ""], "{whole}");

    let records = consume(&brokers, "v-a", 2, IDLE);
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].key.as_deref(), Some(&b"user-1"[..]));
    assert_eq!(records[0].value, b"hello");
    assert_eq!(records[1].value, b"{\"x\":1}");
}

/// Location names are written as nginx read them: a regex location's backslash, and a
/// `kafka_status_zone` with a quote and a backslash, are escaped in both forms.
#[test]
fn label_values_are_escaped() {
    let (_cluster, brokers) = cluster(&[("esc", 1)]);
    let conf = conf_with(
        "",
        "location ~ ^/rx/\\d+$ { kafka_ingest; kafka_topic esc; }\n\
         location = /q { kafka_ingest; kafka_topic esc; kafka_status_zone \"a\\\"b\\\\c\"; }\n\
         location = /metrics { kafka_metrics; }",
    );
    let nginx = Nginx::start_conf(&conf, &brokers);
    assert_eq!(post(nginx.port, "/rx/12", "", b"x").status, 204);
    assert_eq!(post(nginx.port, "/q", "", b"x").status, 204);
    let (regex, zone) = (r"^/rx/\d+$", r#"a"b\c"#);
    let mut text = String::new();
    poll_until("the deliveries to be counted", SETTLE, || {
        text = get(nginx.port, "/metrics").text();
        Exposition::parse(&text).sum("nginx_kafka_delivered_total", &[]) == 2.0
    });
    assert_eq!(promtool_check(&text), (true, String::new()), "{text}");
    assert!(
        text.contains(r#"location="^/rx/\\d+$""#) && text.contains(r#"location="a\"b\\c""#),
        "{text}"
    );
    assert_eq!(
        requests_of(&Exposition::parse(&text)),
        expect(&[(regex, "esc", "accepted", 1), (zone, "esc", "accepted", 1)])
    );
    let json = scrape_json(&nginx, "/metrics?format=json");
    assert_eq!(json["locations"][regex]["esc"]["delivered"], 1, "{json}");
    assert_eq!(json["locations"][zone]["esc"]["delivered"], 1, "{json}");
}

/// Every worker publishes its gauges, also after a reload: the new workers start while the
/// old ones still hold their gauge blocks, and nginx may run many workers
/// (`worker_processes auto` on a large host).
#[test]
fn every_worker_has_gauges_after_a_reload() {
    let (_cluster, brokers) = cluster(&[("w", 1)]);
    let workers = 40;
    let conf = conf_workers(
        workers,
        "",
        "location = /in { kafka_ingest; kafka_topic w; }\n\
         location = /metrics { kafka_metrics; }",
    );
    let nginx = Nginx::start_conf(&conf, &brokers);
    let shown = |nginx: &Nginx| -> (BTreeSet<String>, BTreeSet<String>) {
        let e = scrape(nginx, "/metrics");
        let pids = e
            .find("nginx_kafka_producer_up", &[])
            .iter()
            .map(|s| s.label("pid").to_string())
            .collect();
        let live = nginx.workers().iter().map(|p| p.to_string()).collect();
        (pids, live)
    };
    let mut last = Default::default();
    poll_until("every worker's gauges", SETTLE, || {
        last = shown(&nginx);
        last.0 == last.1
    });
    nginx.reload();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        last = shown(&nginx);
        if last.0 == last.1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "after a reload, gauges of {} of {} workers; log:\n{}",
            last.0.intersection(&last.1).count(),
            last.1.len(),
            nginx
                .log("error.log")
                .lines()
                .filter(|l| l.contains("kafka_metrics_zone"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(last.1.len(), workers);
}

/// The endpoints refuse writes (405); readiness without a producer (no ingest location
/// in the configuration) says so.
#[test]
fn endpoints_refuse_writes_and_readiness_needs_a_producer() {
    let conf = conf_with(
        "",
        "location = /metrics { kafka_metrics; }\n\
         location = /ready { kafka_ready; }",
    );
    let nginx = Nginx::start_conf(&conf, "127.0.0.1:9");
    let mut http = Http::connect(nginx.port);
    for path in ["/metrics", "/ready"] {
        let r = http.request("POST", path, &[], b"x");
        assert_eq!(r.status, 405, "{path}: {}", r.text());
    }
    let (status, body) = ready(nginx.port);
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["reason"], "no_producer", "{body}");
    // Counters with nothing counted yet: a zone, no sets, valid for promtool.
    let text = get(nginx.port, "/metrics").text();
    assert!(text.contains("nginx_kafka_zone_slots{"), "{text}");
    let (ok, said) = promtool_check(&text);
    assert!(ok && said.trim().is_empty(), "{said}\n{text}");
}
