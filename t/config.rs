//! `nginx -t` catches configuration mistakes with a readable `[emerg]` line, and accepts
//! every example configuration.

mod common;

use common::*;

fn rejects(http: &str, server: &str, expected: &str) {
    let (ok, out) = config_test(&conf_with(http, server));
    assert!(!ok, "nginx -t accepted it:\n{out}");
    assert!(out.contains("[emerg]"), "{out}");
    assert!(out.contains(expected), "expected {expected:?} in:\n{out}");
}

const INGEST: &str = "location = /in { kafka_ingest; kafka_topic t; }";

#[test]
fn the_examples_pass_nginx_t() {
    let files = Nginx::example_files();
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let (prefix, _) = Nginx::prepare(&refs, "127.0.0.1:9092");
    let out = std::process::Command::new(nginx_bin())
        .arg("-p")
        .arg(&prefix.0)
        .args(["-c", "conf/nginx.conf", "-e", "logs/stderr.log", "-t"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("test is successful"), "{text}");
}

#[test]
fn a_minimal_ingest_location_passes() {
    let (ok, out) = config_test(&conf_with("", INGEST));
    assert!(ok, "{out}");
}

#[test]
fn unknown_librdkafka_property() {
    rejects(
        "kafka_option no.such.thing 1;",
        INGEST,
        r#"invalid value for "no.such.thing" in "kafka_option" directive: No such configuration property: "no.such.thing""#,
    );
}

#[test]
fn bad_librdkafka_value() {
    rejects(
        "kafka_option compression.type brotli;",
        INGEST,
        r#"invalid value for "compression.type" in "kafka_option" directive: Invalid value for configuration property"#,
    );
    rejects(
        "kafka_option linger.ms soon;",
        INGEST,
        r#"invalid value for "linger.ms" in "kafka_option" directive"#,
    );
}

/// A `kafka_option` value may be a password: no message repeats it.
#[test]
fn option_values_are_not_echoed() {
    for http in [
        "kafka_option ssl.endpoint.identification.algorithm hunter2-secret;",
        "kafka_option no.such.password hunter2-secret;",
        "kafka_option sasl.password hunter2-secret; kafka_option ssl.keystore.password \
         hunter2-secret; kafka_option enable.idempotence true; kafka_option acks 1;",
    ] {
        let (ok, out) = config_test(&conf_with(http, INGEST));
        assert!(!ok, "nginx -t accepted it:\n{out}");
        assert!(out.contains("[emerg]"), "{out}");
        assert!(!out.contains("hunter2"), "the value is echoed:\n{out}");
    }
}

/// Properties that librdkafka only checks together, when a producer is created, are caught
/// by `nginx -t`, not at worker start.
#[test]
fn conflicting_properties() {
    rejects(
        "kafka_option enable.idempotence true; kafka_option acks 1;",
        INGEST,
        r#""kafka_option" properties do not work together: "#,
    );
    let (_, out) = config_test(&conf_with(
        "kafka_option enable.idempotence true; kafka_option acks 1;",
        INGEST,
    ));
    assert!(out.contains("acks"), "{out}");
    let (ok, out) = config_test(&conf_with(
        "kafka_option enable.idempotence true; kafka_option acks all;",
        INGEST,
    ));
    assert!(ok, "{out}");
}

#[test]
fn duplicate_property() {
    rejects(
        "kafka_option linger.ms 5; kafka_option linger.ms 10;",
        INGEST,
        r#"duplicate librdkafka property "linger.ms""#,
    );
}

#[test]
fn brokers_are_set_by_their_directive() {
    rejects(
        "kafka_option bootstrap.servers 127.0.0.1:1;",
        INGEST,
        r#"set by the "kafka_brokers" directive"#,
    );
}

#[test]
fn ingest_without_brokers() {
    let conf = conf_with("", INGEST).replace("kafka_brokers {brokers};", "");
    let (ok, out) = config_test(&conf);
    assert!(!ok);
    assert!(
        out.contains(r#"[emerg]"#)
            && out.contains(r#""kafka_ingest" requires "kafka_brokers" in "#),
        "{out}"
    );
    assert!(
        out.contains("nginx.conf:"),
        "names the file and line: {out}"
    );
}

#[test]
fn ingest_without_topic() {
    rejects(
        "",
        "location = /in { kafka_ingest; }",
        r#""kafka_ingest" requires "kafka_topic""#,
    );
}

#[test]
fn variable_topic_needs_an_allowlist() {
    rejects(
        "",
        "location = /in { kafka_ingest; kafka_topic $http_topic; }",
        r#""kafka_topic" with variables requires "kafka_allowed_topics""#,
    );
}

#[test]
fn fixed_topic_must_be_legal_and_allowed() {
    rejects(
        "",
        "location = /in { kafka_ingest; kafka_topic \"a b\"; }",
        r#"invalid topic name "a b""#,
    );
    rejects(
        "kafka_allowed_topics a.*;",
        "location = /in { kafka_ingest; kafka_topic b; }",
        r#"topic "b" is not in "kafka_allowed_topics""#,
    );
}

#[test]
fn bad_values() {
    rejects(
        "kafka_brokers 127.0.0.1:9092;",
        INGEST,
        r#""kafka_brokers" directive is duplicate"#,
    );
    rejects(
        "kafka_flush_timeout forever;",
        INGEST,
        r#""kafka_flush_timeout" directive invalid value"#,
    );
    rejects(
        "kafka_value_format xml;",
        INGEST,
        r#"invalid value "xml" in "#,
    );
    rejects(
        "kafka_allowed_topics ok bad/topic;",
        INGEST,
        r#"invalid value "bad/topic" in "kafka_allowed_topics" directive"#,
    );
    rejects(
        "kafka_retry_after soon;",
        INGEST,
        r#""kafka_retry_after" directive invalid value"#,
    );
}

#[test]
fn wrong_context() {
    rejects(
        "kafka_ingest;",
        INGEST,
        r#""kafka_ingest" directive is not allowed here"#,
    );
    rejects(
        "",
        "kafka_brokers 127.0.0.1:1;",
        r#""kafka_brokers" directive is not allowed here"#,
    );
    rejects(
        "",
        "location = /x { kafka_option linger.ms 1; }",
        r#""kafka_option" directive is not allowed here"#,
    );
    rejects(
        "",
        "location = /x { kafka_ingest on; }",
        r#"invalid number of arguments in "kafka_ingest" directive"#,
    );
}

#[test]
fn metrics_directives() {
    let metrics = "location = /metrics { kafka_metrics; } location = /ready { kafka_ready; }";
    let (ok, out) = config_test(&conf_with(
        "kafka_metrics_zone 2m;",
        &format!("{INGEST} {metrics} location /j {{ kafka_metrics json; kafka_status_zone j; }}"),
    ));
    assert!(ok, "{out}");
    rejects(
        "kafka_metrics_zone 128k;",
        &format!("{INGEST} {metrics}"),
        r#""kafka_metrics_zone" must be at least 256k"#,
    );
    rejects(
        "kafka_metrics_zone lots;",
        INGEST,
        r#""kafka_metrics_zone" directive invalid value"#,
    );
    rejects(
        "",
        "location = /m { kafka_metrics xml; }",
        r#"invalid value "xml" in "kafka_metrics" directive"#,
    );
    rejects(
        "",
        "location = /m { kafka_metrics; kafka_ready; }",
        r#""kafka_ready" directive is duplicate"#,
    );
    rejects(
        "",
        "location = /m { kafka_status_zone a; kafka_status_zone b; }",
        r#""kafka_status_zone" directive is duplicate"#,
    );
    rejects(
        "",
        &format!("location = /m {{ kafka_status_zone {}; }}", "x".repeat(129)),
        r#"in "kafka_status_zone" directive"#,
    );
    // The counters need every delivery reported; readiness needs the statistics.
    rejects(
        "kafka_option delivery.report.only.error true;",
        &format!("{INGEST} {metrics}"),
        r#""delivery.report.only.error" cannot be "true""#,
    );
    rejects(
        "kafka_option statistics.interval.ms 0;",
        &format!("{INGEST} {metrics}"),
        r#""statistics.interval.ms" cannot be 0"#,
    );
}

#[test]
fn delivery_spool_and_header_directives() {
    let dir = TempDir::new("config-spool");
    let spool = format!(
        "kafka_spool {} max_size=10m fsync=100ms replay_rate=500;",
        dir.0.display()
    );
    let (ok, out) = config_test(&conf_with(
        &format!("{spool} kafka_header id $request_id; kafka_header src nginx;"),
        "location = /q { kafka_ingest; kafka_topic t; kafka_delivery queued; } \
         location = /d { kafka_ingest; kafka_topic t; kafka_delivery durable; } \
         location = /a { kafka_ingest; kafka_topic t; kafka_delivery acked; kafka_ack_timeout 2s; \
                         kafka_header other $uri; }",
    ));
    assert!(ok, "{out}");
    // Durable needs somewhere to write; acked does not.
    rejects(
        "",
        "location = /d { kafka_ingest; kafka_topic t; kafka_delivery durable; }",
        r#""kafka_delivery durable" requires "kafka_spool""#,
    );
    let (ok, out) = config_test(&conf_with(
        "",
        "location = /a { kafka_ingest; kafka_topic t; kafka_delivery acked; }",
    ));
    assert!(ok, "{out}");
    rejects(
        "",
        "location = /d { kafka_ingest; kafka_topic t; kafka_delivery maybe; }",
        r#"invalid value "maybe" in "#,
    );
    rejects(
        "kafka_spool /nonexistent/spool;",
        INGEST,
        r#""kafka_spool" path "/nonexistent/spool": No such file or directory"#,
    );
    rejects(
        &format!("kafka_spool {} max_size=lots;", dir.0.display()),
        INGEST,
        r#"invalid value "max_size=lots" in "kafka_spool" directive"#,
    );
    let (ok, out) = config_test(&conf_with(
        &format!("kafka_spool {} fsync=batch;", dir.0.display()),
        "location = /d { kafka_ingest; kafka_topic t; kafka_delivery durable; }",
    ));
    assert!(ok, "{out}");
    rejects(
        &format!("kafka_spool {} fsync=never;", dir.0.display()),
        INGEST,
        r#"invalid value "fsync=never" in "kafka_spool" directive"#,
    );
    rejects(
        &format!("kafka_spool {} speed=1;", dir.0.display()),
        INGEST,
        r#"invalid value "speed=1" in "kafka_spool" directive"#,
    );
    rejects(
        &format!("{spool} {spool}"),
        INGEST,
        r#""kafka_spool" directive is duplicate"#,
    );
    rejects(
        "kafka_header \"bad name\" x;",
        INGEST,
        r#"invalid value "bad name" in "kafka_header" directive"#,
    );
    rejects(
        "kafka_header id a; kafka_header id b;",
        INGEST,
        r#"duplicate header "id" in "kafka_header" directive"#,
    );
    // Replay must know what was acknowledged, and when a broker is up.
    rejects(
        &format!("{spool} kafka_option delivery.report.only.error true;"),
        INGEST,
        r#""kafka_spool" replays what was not acknowledged: "delivery.report.only.error" cannot be "true""#,
    );
    rejects(
        "kafka_option delivery.report.only.error true;",
        "location = /a { kafka_ingest; kafka_topic t; kafka_delivery acked; }",
        r#""kafka_delivery acked" waits for acknowledgements"#,
    );
    rejects(
        &format!("{spool} kafka_option statistics.interval.ms 0;"),
        INGEST,
        r#""kafka_spool" needs librdkafka's statistics"#,
    );
}
