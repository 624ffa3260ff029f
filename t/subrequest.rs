//! Subrequests: `mirror` copies an existing API's requests into Kafka. The client's
//! keep-alive connection must go on being served, every mirrored event must arrive, and
//! nothing may be left open at quit.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use rdkafka::mocking::MockCluster;

/// An existing API (`/api`, here a proxied location) whose requests are mirrored into an
/// internal `kafka_ingest` location, as README's recipe does.
fn mirror_conf() -> String {
    conf_with(
        "keepalive_requests 10000;",
        "location = /api {\n\
           mirror /kafka-mirror;\n\
           mirror_request_body on;\n\
           proxy_pass http://127.0.0.1:{port}/backend;\n\
         }\n\
         location = /backend { return 200 \"ok\\n\"; }\n\
         location = /kafka-mirror {\n\
           internal;\n\
           kafka_ingest;\n\
           kafka_topic mirrored;\n\
           kafka_key $http_x_user;\n\
         }",
    )
}

#[test]
fn mirror_on_one_keepalive_connection() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("mirrored", 2, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let nginx = Nginx::start_conf(&mirror_conf(), &brokers);

    let mut http = Http::connect(nginx.port);
    let mut sent = BTreeSet::new();
    for i in 0..2000 {
        let body = format!("{{\"mirrored\":{i}}}").into_bytes();
        let r = http.request("POST", "/api", &[("X-User", "u1")], &body);
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        assert_eq!(r.text(), "ok\n");
        sent.insert(body);
    }
    drop(http);

    let got = consume(&brokers, "mirrored", sent.len(), Duration::from_secs(5));
    assert_eq!(got.len(), sent.len(), "every mirrored event, once");
    let values: BTreeSet<Vec<u8>> = got.iter().map(|r| r.value.clone()).collect();
    assert_eq!(values, sent, "byte for byte");
    assert!(got.iter().all(|r| r.key.as_deref() == Some(&b"u1"[..])));
}

/// 10,000 mirrored requests over keep-alive connections: afterwards no connection is left
/// open, and quitting nginx reports no socket left behind (`[alert] ... open socket`).
#[test]
fn mirror_leaves_no_connection_behind() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("mirrored", 2, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let mut nginx = Nginx::start_conf(&mirror_conf(), &brokers);

    let threads: Vec<_> = (0..4)
        .map(|t| {
            let port = nginx.port;
            std::thread::spawn(move || {
                let mut sent = Vec::new();
                let mut http = Http::connect(port);
                for i in 0..2500 {
                    if i % 500 == 499 {
                        http = Http::connect(port);
                    }
                    let body = format!("{{\"t\":{t},\"i\":{i}}}").into_bytes();
                    let r = http.request("POST", "/api", &[], &body);
                    assert_eq!(r.status, 200);
                    sent.push(body);
                }
                sent
            })
        })
        .collect();
    let mut sent = BTreeSet::new();
    for t in threads {
        sent.extend(t.join().unwrap());
    }
    assert_eq!(sent.len(), 10_000);

    let got = consume(&brokers, "mirrored", sent.len(), Duration::from_secs(5));
    let values: BTreeSet<Vec<u8>> = got.iter().map(|r| r.value.clone()).collect();
    assert_eq!(got.len(), sent.len(), "every mirrored event, once");
    assert_eq!(values, sent);

    // Client sockets are closed; nginx must have let go of every connection too.
    let mut open = 0;
    for _ in 0..50 {
        open = established_to(nginx.port);
        if open == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(open, 0, "connections to nginx still established");
    nginx.quit();
    let log = nginx.logs();
    assert!(!log.contains("open socket"), "{log}");
    nginx.check_logs();
}

/// Other subrequests: an SSI include (a GET, so refused with 405) gets the module's answer
/// inline, and the page is served whole. A guard: this worked before the mirror fix too.
#[test]
fn ssi_include_gets_the_answer_inline() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("audited", 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let conf = conf_with(
        "",
        "location = /ssi {\n\
           ssi on;\n\
           ssi_types *;\n\
           return 200 'a<!--# include virtual=\"/kafka-ssi\" -->b';\n\
         }\n\
         location = /kafka-ssi {\n\
           internal;\n\
           kafka_ingest;\n\
           kafka_topic audited;\n\
         }",
    );
    let nginx = Nginx::start_conf(&conf, &brokers);
    // An SSI include is a GET subrequest without a body: the module refuses it (405) inside
    // the page, and the page is still served whole.
    for _ in 0..3 {
        let mut s = TcpStream::connect(("127.0.0.1", nginx.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"GET /ssi HTTP/1.0\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut page = String::new();
        s.read_to_string(&mut page).unwrap();
        let body = page.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
        assert!(page.starts_with("HTTP/1.1 200"), "{page}");
        assert!(body.starts_with('a') && body.ends_with('b'), "{page}");
        assert!(body.contains("method_not_allowed"), "{page}");
    }
    drop(nginx);
}

/// The recipe in nginx/conf.d/putmessage.conf: the API answers, the event is in Kafka.
#[test]
fn the_example_mirror_recipe() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("my-poc-topic-mirror", 3, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let nginx = Nginx::start_example(&brokers);
    let mut http = Http::connect(nginx.port);
    let body = postdata();
    for _ in 0..10 {
        let r = http.request("POST", "/api/orders", &[("X-User-Id", "42")], &body);
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "{\"status\":\"ok\"}\n");
    }
    let got = consume(&brokers, "my-poc-topic-mirror", 10, Duration::from_secs(5));
    assert_eq!(got.len(), 10);
    assert!(got
        .iter()
        .all(|r| r.value == body && r.key.as_deref() == Some(&b"42"[..])));
}
