//! nginx with the module under valgrind's memcheck (`master_process off`, so that the one
//! process valgrind watches is the one that serves): requests of every shape, a mirror, a
//! temp-file body, unknown topics, a broker outage, a reload and a quit. Any memcheck error
//! or definite leak with a frame in the module's .so (our code and the librdkafka linked into
//! it) fails the test.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use rdkafka::mocking::MockCluster;

fn have_valgrind() -> bool {
    Command::new("valgrind")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The error blocks of a valgrind log: each starts at a line naming the error kind.
fn error_blocks(log: &str) -> Vec<String> {
    const KINDS: &[&str] = &[
        "Invalid read",
        "Invalid write",
        "Invalid free",
        "Mismatched free",
        "Conditional jump",
        "Use of uninitialised",
        "uninitialised byte",
        "Syscall param",
        "Source and destination overlap",
        "definitely lost",
    ];
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in log.lines() {
        let text = line.split_once("== ").map_or(line, |x| x.1);
        if KINDS.iter().any(|k| text.contains(k)) {
            if let Some(b) = current.take() {
                blocks.push(b);
            }
            current = Some(String::new());
        }
        if let Some(b) = current.as_mut() {
            if text.trim().is_empty() {
                blocks.push(current.take().unwrap());
                continue;
            }
            b.push_str(text);
            b.push('\n');
        }
    }
    blocks.extend(current);
    blocks
}

#[test]
fn module_under_memcheck() {
    if !have_valgrind() {
        panic!("valgrind is not installed (make test installs it)");
    }
    let cluster = MockCluster::new(1).unwrap();
    for t in ["mc", "mc-var", "mc-mirror"] {
        cluster.create_topic(t, 2, 1).unwrap();
    }
    let brokers = cluster.bootstrap_servers();
    let spool = TempDir::new("memcheck-spool");
    let conf = conf_with(
        &format!("kafka_spool {} fsync=batch;\n\
         kafka_header id $request_id;\n\
         kafka_flush_timeout 2s;\n\
         log_format kafka '$kafka_result $kafka_topic $kafka_key $kafka_bytes';\n\
         access_log logs/kafka.log kafka;\n\
         kafka_option message.timeout.ms 3000;\n\
         kafka_option linger.ms 5;", spool.0.display()),
        "location = /in { kafka_ingest; kafka_topic mc; kafka_key $arg_uid; }\n\
         location = /d { kafka_ingest; kafka_topic mc; kafka_delivery durable; }\n\
         location = /a { kafka_ingest; kafka_topic mc; kafka_delivery acked; kafka_ack_timeout 1s; }\n\
         location = /var {\n\
           kafka_ingest;\n\
           kafka_topic $http_topic;\n\
           kafka_allowed_topics mc-*;\n\
           kafka_value_format body_data;\n\
         }\n\
         location = /small {\n\
           client_body_buffer_size 1k;\n\
           kafka_ingest;\n\
           kafka_topic mc;\n\
         }\n\
         location = /api {\n\
           mirror /kafka-mirror;\n\
           mirror_request_body on;\n\
           return 200;\n\
         }\n\
         location = /proxied { mirror /kafka-mirror; proxy_pass http://127.0.0.1:{port}/ok; }\n\
         location = /ok { return 200 \"ok\"; }\n\
         location = /kafka-mirror { internal; kafka_ingest; kafka_topic mc-mirror; }\n\
         location = /metrics { kafka_metrics; }\n\
         location = /ready { kafka_ready; }",
    )
    .replace("worker_processes 1;", "master_process off;");
    let (prefix, _) = Nginx::prepare(&[], &brokers);
    let vlog = prefix.0.join("valgrind.txt");
    let vlog_arg = format!("--log-file={}", vlog.display());
    let supp_arg = format!(
        "--suppressions={}",
        repo().join("t/memcheck.supp").display()
    );
    let mut nginx = Nginx::start_wrapped(
        &[("nginx.conf", &conf)],
        &brokers,
        &[
            "valgrind",
            "--tool=memcheck",
            "--num-callers=40",
            "--leak-check=full",
            "--show-leak-kinds=definite",
            "--errors-for-leak-kinds=definite",
            // The configuration check forks a child that exits without cleaning up.
            "--child-silent-after-fork=yes",
            &supp_arg,
            &vlog_arg,
        ],
    );
    let started = Instant::now();
    let mut http = Http::connect(nginx.port);
    let mut accepted = 0;
    for i in 0..60 {
        let body = format!("{{\"i\":{i},\"s\":\"\\u00e9\\n\"}}");
        assert_eq!(
            http.request("POST", &format!("/in?uid=u{}", i % 7), &[], body.as_bytes())
                .status,
            204
        );
        assert_eq!(http.post("/var", "mc-var", body.as_bytes()).status, 204);
        accepted += 2;
    }
    // Durable and acknowledged delivery.
    for i in 0..10 {
        assert_eq!(http.post("/d", "", format!("d-{i}").as_bytes()).status, 204);
        assert_eq!(http.post("/a", "", format!("a-{i}").as_bytes()).status, 204);
        accepted += 2;
    }
    // Temp-file bodies, chunked bodies, refusals of every kind.
    let big = vec![b'x'; 40_000];
    assert_eq!(http.request("POST", "/small", &[], &big).status, 204);
    accepted += 1;
    let chunked = b"POST /in HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
                    5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    assert_eq!(http.send_raw(chunked).status, 204);
    accepted += 1;
    assert_eq!(http.request("GET", "/in", &[], b"").status, 405);
    assert_eq!(http.request("POST", "/in", &[], b"").status, 400);
    assert_eq!(http.post("/var", "elsewhere", b"x").status, 403);
    assert_eq!(http.post("/var", "bad topic", b"x").status, 400);
    for i in 0..20 {
        assert_eq!(
            http.post("/var", &format!("mc-missing-{i}"), b"x").status,
            404
        );
    }
    for _ in 0..20 {
        assert_eq!(http.request("POST", "/api", &[], b"{\"m\":1}").status, 200);
        assert_eq!(
            http.request("POST", "/proxied", &[], b"{\"m\":2}").status,
            200
        );
    }
    // An outage: these fail after message.timeout.ms and are spooled, then replayed.
    cluster.broker_down(1).unwrap();
    for i in 0..10 {
        assert_eq!(
            http.post("/in", "", format!("down-{i}").as_bytes()).status,
            204
        );
        assert_eq!(
            http.post("/d", "", format!("down-d-{i}").as_bytes()).status,
            204
        );
    }
    // Acknowledged: the wait ends; a client that goes away while it waits.
    assert_eq!(http.post("/a", "", b"down-a").status, 503);
    for i in 0..3 {
        let mut gone = std::net::TcpStream::connect(("127.0.0.1", nginx.port)).unwrap();
        let request = format!("POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 8\r\n\r\ngone-a-{i}");
        std::io::Write::write_all(&mut gone, request.as_bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        drop(gone);
    }
    std::thread::sleep(Duration::from_secs(5));
    cluster.broker_up(1).unwrap();
    std::thread::sleep(Duration::from_secs(5));
    // The metrics in both forms, readiness.
    for path in ["/metrics", "/metrics?format=json", "/ready"] {
        let r = http.request("GET", path, &[], b"");
        assert!([200, 503].contains(&r.status), "{path}: {}", r.status);
    }
    let metrics = http.request("GET", "/metrics", &[], b"").text();
    assert!(metrics.contains("nginx_kafka_requests_total"), "{metrics}");
    drop(http);
    // A reload replaces the producer; then a quit flushes.
    nginx.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_secs(5));
    nginx.quit();
    let log = nginx.logs();
    assert!(log.contains("kafka: producer stopped"), "{log}");
    assert!(log.contains("are spooled to"), "{log}");
    assert!(log.contains("replayed"), "{log}");

    let report = std::fs::read_to_string(&vlog).unwrap_or_default();
    let summary = report
        .lines()
        .rfind(|l| l.contains("ERROR SUMMARY"))
        .unwrap_or("no summary")
        .to_string();
    let ours: Vec<String> = error_blocks(&report)
        .into_iter()
        .filter(|b| b.contains("ngx_http_kafka_module"))
        .collect();
    println!(
        "memcheck: {accepted}+ events, {:?} under valgrind; {summary}; {} error(s) in the module",
        started.elapsed(),
        ours.len()
    );
    assert!(
        report.contains("ERROR SUMMARY"),
        "valgrind did not finish:\n{report}"
    );
    assert!(
        ours.is_empty(),
        "memcheck errors in the module:\n{}",
        ours.join("\n")
    );
}
