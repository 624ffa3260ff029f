//! Worker exit and failure bursts: whatever ends a worker (reload, quit, fast stop, a fast
//! stop during a reload's flush, a reload of a single process), every event answered 204 is
//! delivered or logged with its payload; a burst of failures does not stop nginx answering.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use rdkafka::mocking::MockCluster;

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(50));
    }
}

fn body(tag: &str, i: usize) -> Vec<u8> {
    format!("{{\"{tag}\":{i},\"pad\":\"{}\"}}", "x".repeat(i % 97)).into_bytes()
}

/// Posts `n` events on one keep-alive connection; all must be answered 204.
fn post_n(port: u16, tag: &str, n: usize) -> BTreeSet<Vec<u8>> {
    let mut http = Http::connect(port);
    let mut sent = BTreeSet::new();
    for i in 0..n {
        let b = body(tag, i);
        let r = http.request("POST", "/in", &[], &b);
        assert_eq!(r.status, 204, "{}", r.text());
        sent.insert(b);
    }
    sent
}

/// Compares sets of payloads by their counts first, so that a failure stays readable.
fn same(what: &str, got: &BTreeSet<Vec<u8>>, want: &BTreeSet<Vec<u8>>) {
    let missing = want.difference(got).count();
    let extra = got.difference(want).count();
    assert!(
        missing == 0 && extra == 0,
        "{what}: {} expected, {} found, {missing} missing, {extra} unexpected",
        want.len(),
        got.len()
    );
}

fn logged(log: &str) -> BTreeSet<Vec<u8>> {
    let all = undelivered_payloads(log);
    let set: BTreeSet<Vec<u8>> = all.iter().cloned().collect();
    assert_eq!(set.len(), all.len(), "an event was logged twice");
    set
}

/// nginx with the default flush timeout (10 s), its broker down, and 500 events answered 204.
fn down_with_500_accepted(
    tag: &str,
) -> (
    MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    Nginx,
    BTreeSet<Vec<u8>>,
) {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("exit-t", 2, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let conf = conf_with("", "location = /in { kafka_ingest; kafka_topic exit-t; }");
    let nginx = Nginx::start_conf(&conf, &brokers);
    cluster.broker_down(1).unwrap();
    let sent = post_n(nginx.port, tag, 500);
    (cluster, nginx, sent)
}

/// Finding: the broker is down, 500 events were answered 204, nginx reloads and 1.5 s later
/// is stopped fast. The old worker, still in its reload flush, must notice the TERM and log
/// every event before the master's SIGKILL.
#[test]
fn fast_stop_during_a_reload_flush() {
    let (_cluster, mut nginx, sent) = down_with_500_accepted("reload-term");

    let old = nginx.workers();
    nginx.signal(libc::SIGHUP);
    wait_for("new workers", Duration::from_secs(10), || {
        nginx.workers().iter().any(|p| !old.contains(p))
    });
    thread::sleep(Duration::from_millis(1500));
    assert!(
        old.iter().any(|p| nginx.workers().contains(p)),
        "the old worker is still flushing (kafka_flush_timeout 10s)"
    );
    nginx.stop_with(libc::SIGTERM);

    let log = nginx.logs();
    same("every answered event is logged", &logged(&log), &sent);
    assert!(!log.contains("exited on signal"), "{log}");
    let (delivered, failed) = exit_counts(&log);
    assert_eq!((delivered, failed), (0, 500), "{log}");
}

/// A fast stop alone with the broker down logs every event too.
#[test]
fn fast_stop_logs_everything() {
    let (_cluster, mut nginx, sent) = down_with_500_accepted("term");
    nginx.stop_with(libc::SIGTERM);
    let log = nginx.logs();
    same("every answered event is logged", &logged(&log), &sent);
    assert_eq!(exit_counts(&log), (0, 500), "{log}");
}

/// A reload with the broker up: the old worker delivers everything and exits without
/// waiting for the flush timeout; nothing is logged as undelivered.
#[test]
fn reload_delivers_then_exits() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("exit-t", 2, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let conf = conf_with(
        "kafka_option linger.ms 200;",
        "location = /in { kafka_ingest; kafka_topic exit-t; }",
    );
    let mut nginx = Nginx::start_conf(&conf, &brokers);
    let sent = post_n(nginx.port, "reload-up", 300);
    nginx.reload();
    nginx.quit();
    let log = nginx.logs();
    assert!(undelivered_payloads(&log).is_empty(), "{log}");
    let got: BTreeSet<Vec<u8>> = consume(&brokers, "exit-t", sent.len(), Duration::from_secs(5))
        .into_iter()
        .map(|r| r.value)
        .collect();
    same("every event delivered", &got, &sent);
    assert_eq!(exit_counts(&log).0, 300, "{log}");
}

/// Finding: when `message.timeout.ms` expires for a full queue, every report arrives at once.
/// The worker serves them a bounded amount per turn, so concurrent requests are still
/// answered, and the refusals of a full queue are logged once per window, not per request.
#[test]
fn mass_expiry_keeps_answering() {
    const QUEUE: usize = 20_000;
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("burst", 4, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let conf = conf_with(
        &format!(
            "keepalive_requests 1000000;\n\
             kafka_option queue.buffering.max.messages {QUEUE};\n\
             kafka_option message.timeout.ms 6000;"
        ),
        "location = /in { kafka_ingest; kafka_topic burst; }",
    );
    let nginx = Nginx::start_conf(&conf, &brokers);
    cluster.broker_down(1).unwrap();

    // Fill the queue, and keep posting while it expires.
    let stop = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let (mut refused, mut answered) = (0usize, 0usize);
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let (stop, accepted, latencies) = (stop.clone(), accepted.clone(), latencies.clone());
            let port = nginx.port;
            thread::spawn(move || {
                let mut http = Http::connect(port);
                let (mut refused, mut answered) = (0, 0);
                let deadline = Instant::now() + Duration::from_secs(60);
                for i in 0..200_000 {
                    if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                        break;
                    }
                    let b = body(&format!("c{c}"), i);
                    let t = Instant::now();
                    let r = http.request("POST", "/in", &[], &b);
                    latencies.lock().unwrap().push(t.elapsed());
                    answered += 1;
                    match r.status {
                        204 => accepted.lock().unwrap().push(b),
                        503 => refused += 1,
                        s => panic!("unexpected status {s}: {}", r.text()),
                    }
                }
                (refused, answered)
            })
        })
        .collect();

    // Run until the first expiries have been logged, then a little longer.
    let log_has = |n: usize| undelivered_payloads(&nginx.log("error.log")).len() >= n;
    wait_for("the queue to expire", Duration::from_secs(40), || {
        log_has(QUEUE)
    });
    thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let (r, a) = c.join().expect("every request was answered");
        refused += r;
        answered += a;
    }
    let accepted: BTreeSet<Vec<u8>> = accepted.lock().unwrap().iter().cloned().collect();

    wait_for(
        "every accepted event logged",
        Duration::from_secs(20),
        || log_has(accepted.len()),
    );
    let log = nginx.log("error.log");
    same(
        "each accepted event is logged once",
        &logged(&log),
        &accepted,
    );
    assert!(
        refused > 1000,
        "the queue was full for a while: {refused} refused"
    );
    let refusal_lines = log
        .lines()
        .filter(|l| l.contains("kafka: event to \"burst\" refused"))
        .count();
    assert!(
        refusal_lines <= 10,
        "{refusal_lines} refusal lines for {refused} refused requests"
    );
    let mut l = latencies.lock().unwrap().clone();
    l.sort();
    println!(
        "mass expiry: {answered} answered, {} accepted, {refused} refused, {refusal_lines} \
         refusal lines; latency p50 {:?} p99 {:?} max {:?}",
        accepted.len(),
        l[l.len() / 2],
        l[l.len() * 99 / 100],
        l[l.len() - 1]
    );
}

/// Finding: with `master_process off`, a reload kept the old producer (old brokers, old
/// options) for ever. Now the old one is flushed and logged, and a new one starts from the
/// new configuration.
#[test]
fn single_process_reload_replaces_the_producer() {
    let old_cluster = MockCluster::new(1).unwrap();
    old_cluster.create_topic("single", 1, 1).unwrap();
    let new_cluster = MockCluster::new(1).unwrap();
    new_cluster.create_topic("single", 1, 1).unwrap();
    let (old_brokers, new_brokers) = (
        old_cluster.bootstrap_servers(),
        new_cluster.bootstrap_servers(),
    );
    let conf = conf_with(
        "kafka_flush_timeout 1s;",
        "location = /in { kafka_ingest; kafka_topic single; }",
    )
    .replace("worker_processes 1;", "master_process off;");
    let mut nginx = Nginx::start_conf(&conf, &old_brokers);
    old_cluster.broker_down(1).unwrap();
    let sent = post_n(nginx.port, "single", 20);

    let conf_path = nginx.prefix.0.join("conf/nginx.conf");
    let text = std::fs::read_to_string(&conf_path).unwrap();
    std::fs::write(&conf_path, text.replace(&old_brokers, &new_brokers)).unwrap();
    nginx.signal(libc::SIGHUP);
    let started = format!("kafka: producer started, brokers \"{new_brokers}\"");
    wait_for("the new producer", Duration::from_secs(20), || {
        nginx.log("error.log").contains(&started)
    });
    let log = nginx.log("error.log");
    same("the old producer's events are logged", &logged(&log), &sent);
    assert!(
        log.contains("kafka: producer stopped: 20 queued at exit"),
        "{log}"
    );
    nginx.quit();
}
