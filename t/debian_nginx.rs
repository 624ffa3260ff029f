//! The module built against Debian's nginx (package nginx-dev) loads into /usr/sbin/nginx and
//! delivers an event. Run by `make test-debian`, which builds that module and sets
//! NGINX_BIN and NGINX_MODULE; ignored in a plain `cargo test`.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use rdkafka::mocking::MockCluster;

#[test]
#[ignore = "needs the Debian build: make test-debian"]
fn debian_nginx_loads_the_module_and_delivers() {
    let version = Command::new(nginx_bin()).arg("-v").output().unwrap();
    let version = String::from_utf8_lossy(&version.stderr).into_owned();
    assert!(
        version.contains("nginx/1.22."),
        "not Debian's nginx: {version}"
    );

    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("my-poc-topic-01", 3, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let nginx = Nginx::start_example(&brokers);
    let body = postdata();
    let r = post(nginx.port, "/putmessage", "my-poc-topic-01", &body);
    assert_eq!(r.status, 204, "{}", r.text());
    let records = consume(&brokers, "my-poc-topic-01", 1, Duration::from_secs(5));
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].value, body);
    assert!(
        nginx.logs().contains("nginx/1.22."),
        "the log shows Debian's nginx ran"
    );
}
