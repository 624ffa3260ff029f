//! Secured brokers: TLS (the CA bundle, host names verified) and SASL/SCRAM.
//!
//! Neither the mock cluster nor tansu 0.6 (as built here) speaks TLS to clients, so TLS is
//! tested through a TLS-terminating proxy: nginx's own stream module in front of a tansu
//! broker that advertises the proxy's address, so that every connection the producer makes
//! is TLS. tansu does check SCRAM credentials (`--authentication`), but keeps no user across
//! a restart and refuses client requests before authentication, user creation included, so
//! only the refusal can be shown: a worker with credentials the broker does not know logs
//! why, reports not ready, and logs every event it could not deliver.

mod common;

use std::fs;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::ledger::*;
use common::*;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

struct Tansu {
    child: Child,
    dir: TempDir,
    port: u16,
}

impl Tansu {
    /// A tansu broker on `port`, advertising `advertised`.
    fn start(port: u16, advertised: &str, extra: &[&str]) -> Tansu {
        let dir = TempDir::new("tansu-sec");
        let log = fs::File::create(dir.0.join("tansu.log")).unwrap();
        let child = Command::new(tansu_binary())
            .arg("broker")
            .args(["--listener-url", &format!("tcp://127.0.0.1:{port}")])
            .args(["--advertised-listener-url", advertised])
            .args(["--storage-engine", "memory://tansu/"])
            .args(["--cluster-id", "nginx-kafka-security"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("tansu starts");
        let t = Tansu { child, dir, port };
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "tansu does not listen");
            thread::sleep(Duration::from_millis(20));
        }
        t
    }

    fn create_topic(&self, name: &str) {
        let out = Command::new(tansu_binary())
            .args(["topic", "create", name, "--partitions", "1"])
            .args(["--broker", &format!("tcp://127.0.0.1:{}", self.port)])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = &self.dir;
    }
}

/// Reads `topic` over TLS from the beginning.
fn consume_tls(brokers: &str, ca: &Path, topic: &str, want: usize) -> Vec<Vec<u8>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("security.protocol", "ssl")
        .set("ssl.ca.location", ca.to_str().unwrap())
        .set("group.id", "security-tests")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&list).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while out.len() < want && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            use rdkafka::Message;
            out.push(m.payload().unwrap_or_default().to_vec());
        }
    }
    out
}

fn ready(port: u16) -> u16 {
    Http::connect(port)
        .request("GET", "/ready", &[], b"")
        .status
}

fn wait_ready(nginx: &Nginx, want: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while ready(nginx.port) != want {
        assert!(
            Instant::now() < deadline,
            "/ready never {want}:\n{}",
            nginx.logs()
        );
        thread::sleep(Duration::from_millis(200));
    }
}

/// The module's nginx against `brokers` with `options` (http-level lines).
fn collector(brokers: &str, options: &str) -> Nginx {
    let conf = conf_with(
        options,
        "location = /in { kafka_ingest; kafka_topic sec-t; }\n location = /ready { kafka_ready; }",
    );
    Nginx::start_conf(&conf, brokers)
}

#[test]
fn tls_with_the_ca_bundle_and_host_names_verified() {
    let certs = TempDir::new("certs");
    test_certificates(&certs.0);
    // The proxy: nginx's stream module, TLS on the outside, tansu's plain port inside.
    let tansu_port = free_port();
    let proxy_conf = format!(
        "worker_processes 1;\n\
         error_log logs/error.log info;\n\
         pid logs/nginx.pid;\n\
         events {{ worker_connections 256; }}\n\
         stream {{\n\
           server {{\n\
             listen 127.0.0.1:{{port}} ssl;\n\
             ssl_certificate {dir}/server.pem;\n\
             ssl_certificate_key {dir}/server.key;\n\
             proxy_pass 127.0.0.1:{tansu_port};\n\
           }}\n\
         }}\n",
        dir = certs.0.display()
    );
    let proxy = Nginx::start_conf(&proxy_conf, "unused");
    let tansu = Tansu::start(tansu_port, &format!("tcp://localhost:{}", proxy.port), &[]);
    tansu.create_topic("sec-t");
    let tls = format!("localhost:{}", proxy.port);
    let ca = certs.0.join("ca.pem");

    // The right CA: ready, and every event read back over TLS.
    let nginx = collector(
        &tls,
        &format!(
            "kafka_option security.protocol ssl;\n\
             kafka_option ssl.ca.location {};\n\
             kafka_option ssl.endpoint.identification.algorithm https;",
            ca.display()
        ),
    );
    wait_ready(&nginx, 200);
    let mut http = Http::connect(nginx.port);
    let sent: Vec<Vec<u8>> = (0..50)
        .map(|i| format!("{{\"tls\":{i}}}").into_bytes())
        .collect();
    for e in &sent {
        assert_eq!(http.request("POST", "/in", &[], e).status, 204);
    }
    assert_eq!(consume_tls(&tls, &ca, "sec-t", 51), sent);
    nginx.check_logs();

    // Another CA: the handshake fails, the log says why, the worker is not ready.
    let wrong_ca = collector(
        &tls,
        &format!(
            "kafka_option security.protocol ssl;\n\
             kafka_option ssl.ca.location {};",
            certs.0.join("other-ca.pem").display()
        ),
    );
    thread::sleep(Duration::from_secs(3));
    assert_eq!(ready(wrong_ca.port), 503);
    let log = wrong_ca.logs();
    assert!(log.contains("certificate verify failed"), "{log}");

    // The broker by an address the certificate does not name: host name verification
    // refuses it.
    let by_ip = collector(
        &format!("127.0.0.1:{}", proxy.port),
        &format!(
            "kafka_option security.protocol ssl;\n\
             kafka_option ssl.ca.location {};",
            ca.display()
        ),
    );
    thread::sleep(Duration::from_secs(3));
    assert_eq!(ready(by_ip.port), 503);
    let log = by_ip.logs();
    let line = log
        .lines()
        .find(|l| l.contains("certificate verify failed"))
        .unwrap_or_else(|| panic!("{log}"));
    println!("{line}");
    drop(tansu);
}

#[test]
fn scram_credentials_the_broker_refuses() {
    let port = free_port();
    let tansu = Tansu::start(
        port,
        &format!("tcp://127.0.0.1:{port}"),
        &["--authentication"],
    );
    let nginx = collector(
        &format!("127.0.0.1:{port}"),
        "kafka_option security.protocol sasl_plaintext;\n\
         kafka_option sasl.mechanism SCRAM-SHA-512;\n\
         kafka_option sasl.username alice;\n\
         kafka_option sasl.password \"not-her-password\";\n\
         kafka_option message.timeout.ms 3000;",
    );
    thread::sleep(Duration::from_secs(2));
    assert_eq!(ready(nginx.port), 503, "{}", nginx.logs());
    // Events are still taken (the broker may come to accept the credentials): none is lost
    // silently; each one that times out is logged with its payload.
    let load = Load::new(nginx.port, "/in")
        .clients(2)
        .rate(Some(50.0))
        .max_events(50)
        .start("scram");
    let mut ledger = load.join();
    thread::sleep(Duration::from_secs(5));
    ledger.recover_from_log(&nginx.logs());
    let report = ledger.report("scram-refused");
    report.print();
    report.assert_missing_zero();
    assert_eq!(report.delivered, 0);
    let log = nginx.logs();
    assert!(log.contains("SASL authentication error"), "{log}");
    assert!(
        !log.contains("not-her-password"),
        "the password is never logged"
    );
    nginx.check_logs();
    drop(tansu);
}
