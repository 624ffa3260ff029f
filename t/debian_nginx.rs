//! The module built against Debian's own nginx (1.22.1, package nginx-dev), loaded into
//! /usr/sbin/nginx with the example configuration. `make test-debian` builds the module
//! (scripts/build-debian.sh) and runs this with NGINX_BIN=/usr/sbin/nginx and
//! NGINX_MODULE=build/debian/ngx_http_kafka_module.so; plain `cargo test` skips it.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use rdkafka::mocking::MockCluster;

#[test]
#[ignore = "needs Debian's nginx and the module built for it: make test-debian"]
fn example_config_on_debian_nginx() {
    let bin = nginx_bin();
    let module = module_path();
    assert!(
        std::env::var_os("NGINX_BIN").is_some() && std::env::var_os("NGINX_MODULE").is_some(),
        "run through `make test-debian` (NGINX_BIN and NGINX_MODULE unset)"
    );
    assert!(module.is_file(), "no module at {}", module.display());

    // It really is Debian's nginx 1.22.
    let out = Command::new(&bin)
        .arg("-V")
        .output()
        .expect("nginx -V runs");
    let version = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{} -V: {version}", bin.display());
    let first = version.lines().next().unwrap_or("");
    assert!(
        first.starts_with("nginx version: nginx/1.22."),
        "{} is not nginx 1.22: {first}",
        bin.display()
    );
    eprintln!("{}: {first}", bin.display());

    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("my-poc-topic-01", 3, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let nginx = Nginx::start_example(&brokers);

    let body = postdata();
    let r = Http::connect(nginx.port).request(
        "POST",
        "/putmessage",
        &[
            ("Content-Type", "application/json"),
            ("topic", "my-poc-topic-01"),
        ],
        &body,
    );
    assert_eq!(r.status, 204, "{}\n{}", r.text(), nginx.logs());
    assert!(r.body.is_empty());
    assert!(
        r.header("server")
            .is_some_and(|s| s.starts_with("nginx/1.22.")),
        "answered by Debian's nginx: {:?}",
        r.header("server")
    );

    let records = consume(&brokers, "my-poc-topic-01", 1, Duration::from_secs(10));
    assert_eq!(records.len(), 1, "{}", nginx.logs());
    assert_eq!(records[0].value, body, "byte-equal to postdata.json");
    assert!(records[0].key.is_none());

    let logs = nginx.logs();
    assert!(
        logs.contains("nginx/1.22.") && logs.contains("kafka: producer started"),
        "Debian's nginx started the module's producer:\n{logs}"
    );
    assert!(!logs.contains("message not delivered"), "{logs}");
}

/// The benchmark's configuration (bench/nginx.conf.in) on the same nginx, with Debian's Lua
/// module loaded beside ours: it passes `nginx -t`, and each contestant answers as the
/// benchmark expects (the ceiling and the module 204, the Lua script 200), with the module's
/// event in Kafka byte for byte. What the Lua script delivers is the benchmark's to report.
#[test]
#[ignore = "needs Debian's nginx, its Lua module and the module built for it: make test-debian"]
fn benchmark_config_on_debian_nginx() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("bench-test", 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let (host, port) = brokers.rsplit_once(':').unwrap();

    let conf = std::fs::read_to_string(repo().join("bench/nginx.conf.in")).unwrap();
    let conf = conf
        .replace("@MODULE@", "{module}")
        .replace("@WORKERS@", "1")
        .replace("@AFFINITY@", "")
        .replace("@BROKERS@", "{brokers}")
        .replace(
            "@KAFKA_OPTIONS@",
            "kafka_option linger.ms 5; kafka_option compression.type lz4;",
        )
        .replace("@PORT@", "{port}")
        .replace("@METRICS@", "location = /metrics { kafka_metrics; }")
        .replace("@SPOOL@", "")
        .replace("@DELIVERY@", "")
        .replace("@SITES@", "")
        .replace("@COLLECT@", "")
        .replace("@PREFIX@/send2kafka.lua", "conf/send2kafka.lua");
    assert!(!conf.contains('@'), "every placeholder is filled:\n{conf}");
    let lua = std::fs::read_to_string(repo().join("bench/send2kafka.lua")).unwrap();
    let lua = lua
        .replace("@BROKER_HOST@", host)
        .replace("@BROKER_PORT@", port);

    let (ok, text) = config_test(&conf);
    assert!(ok, "nginx -t on the benchmark configuration:\n{text}");

    let nginx = Nginx::start(&[("nginx.conf", &conf), ("send2kafka.lua", &lua)], &brokers);
    let body = postdata();
    let mut statuses = Vec::new();
    for location in ["/ceiling", "/module", "/lua"] {
        let r = Http::connect(nginx.port).request(
            "POST",
            location,
            &[
                ("Content-Type", "application/json"),
                ("topic", "bench-test"),
            ],
            &body,
        );
        statuses.push(r.status);
    }
    assert_eq!(statuses, [204, 204, 200], "{}", nginx.logs());

    // Two at most: the module's, and the Lua script's should the packaged library deliver it.
    let records = consume(&brokers, "bench-test", 2, Duration::from_secs(3));
    let from_module: Vec<_> = records.iter().filter(|r| r.value == body).collect();
    assert_eq!(from_module.len(), 1, "{}", nginx.logs());

    // The `module+metrics` contestants' endpoint counts the module's event.
    let metrics = Http::connect(nginx.port)
        .request("GET", "/metrics", &[], b"")
        .text();
    assert!(
        metrics.contains(
            r#"nginx_kafka_requests_total{location="/module",topic="bench-test",result="accepted"} 1"#
        ),
        "{metrics}"
    );
}

/// Finding: Debian's nginx is built `--with-debug`; with `error_log ... debug` it logs the
/// ident of every timer it adds, deletes or fires, which crashed workers whose timer event
/// had no `data` (signal 11 at the first tick). Ticks, deliveries, failures, a reload and a
/// quit, all at debug level.
#[test]
#[ignore = "needs Debian's nginx and the module built for it: make test-debian"]
fn debug_logging_on_a_debug_build() {
    let out = Command::new(nginx_bin()).arg("-V").output().unwrap();
    let flags = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(flags.contains("--with-debug"), "not a debug build: {flags}");

    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("dbg", 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let conf = conf_with(
        "kafka_option message.timeout.ms 1000;",
        "location = /in { kafka_ingest; kafka_topic dbg; }",
    )
    .replace(
        &format!("error_log logs/error.log {};", error_log_level()),
        "error_log logs/error.log debug;",
    );
    let mut nginx = Nginx::start_conf(&conf, &brokers);
    let mut http = Http::connect(nginx.port);
    for i in 0..20 {
        assert_eq!(http.post("/in", "", format!("{i}").as_bytes()).status, 204);
    }
    // Three ticks of the module's timer.
    std::thread::sleep(Duration::from_millis(3200));
    cluster.broker_down(1).unwrap();
    for i in 0..5 {
        assert_eq!(
            http.post("/in", "", format!("down-{i}").as_bytes()).status,
            204
        );
    }
    std::thread::sleep(Duration::from_millis(2500));
    drop(http);
    nginx.reload();
    nginx.quit();
    let log = nginx.logs();
    assert!(
        log.contains("[debug]") && log.contains("event timer"),
        "debug lines"
    );
    assert!(!log.contains("exited on signal"), "a worker crashed");
    assert_eq!(
        undelivered_payloads(&log).len(),
        5,
        "the 5 events sent while down"
    );
    nginx.check_logs();
}
