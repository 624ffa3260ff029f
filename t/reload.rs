//! Reloads and shutdowns under load: no alert, no crash, and every event answered 2xx is in
//! Kafka or, with its payload, in the error log.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use rdkafka::mocking::MockCluster;

/// One POST on a fresh connection; `None` when the connection failed (nginx going away).
fn try_post(port: u16, body: &[u8]) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let head = format!(
        "POST /in HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).ok()?;
    s.write_all(body).ok()?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).ok()?;
    let line = String::from_utf8_lossy(&resp);
    line.split(' ').nth(1)?.parse().ok()
}

fn under_load(stop_signal: i32) {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("reload-t", 3, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let conf = conf_with("", "location = /in { kafka_ingest; kafka_topic reload-t; }")
        .replace("worker_processes 1;", "worker_processes 2;");
    let mut nginx = Nginx::start_conf(&conf, &brokers);
    let port = nginx.port;

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let answered_per_phase = Arc::new(Mutex::new(Vec::new()));
    let mut clients = Vec::new();
    for c in 0..3 {
        let (stop, acked) = (stop.clone(), acked.clone());
        clients.push(thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(40);
            for n in 0..100_000u32 {
                if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                    break;
                }
                let body = format!("{{\"client\":{c},\"seq\":{n}}}").into_bytes();
                match try_post(port, &body) {
                    Some(204) => {
                        acked.lock().unwrap().insert(body);
                    }
                    Some(s) => panic!("unexpected status {s}"),
                    None => thread::sleep(Duration::from_millis(5)),
                }
            }
        }));
    }

    let count = || acked.lock().unwrap().len();
    thread::sleep(Duration::from_millis(700));
    for _ in 0..3 {
        let before = count();
        nginx.reload();
        thread::sleep(Duration::from_millis(700));
        let after = count();
        answered_per_phase.lock().unwrap().push(after - before);
        assert!(after > before, "nginx kept answering across the reload");
    }
    nginx.stop_with(stop_signal);
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    nginx.check_logs();

    let acked = acked.lock().unwrap().clone();
    let in_kafka: BTreeSet<Vec<u8>> =
        consume(&brokers, "reload-t", acked.len(), Duration::from_secs(5))
            .into_iter()
            .map(|r| r.value)
            .collect();
    let logged: BTreeSet<Vec<u8>> = undelivered_payloads(&nginx.logs()).into_iter().collect();
    let missing: Vec<_> = acked
        .iter()
        .filter(|b| !in_kafka.contains(*b) && !logged.contains(*b))
        .collect();
    println!(
        "answered 204: {}, in Kafka: {}, in the error log: {}, missing: {}, per reload: {:?}",
        acked.len(),
        in_kafka.len(),
        logged.len(),
        missing.len(),
        answered_per_phase.lock().unwrap()
    );
    assert!(
        acked.len() >= 300,
        "enough load to mean something: {}",
        acked.len()
    );
    assert!(
        missing.is_empty(),
        "answered 204 but lost: {:?}",
        &missing[..missing.len().min(3)]
    );
    let log = nginx.logs();
    assert!(
        log.matches("kafka: producer stopped").count() >= 2 * 4,
        "every worker flushed:\n{log}"
    );
}

#[test]
fn three_reloads_and_a_quit_under_load() {
    under_load(libc::SIGQUIT);
}

#[test]
fn three_reloads_and_a_fast_stop_under_load() {
    under_load(libc::SIGTERM);
}
