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
