//! Requests into Kafka, on librdkafka's mock cluster: the original acceptance test, keys,
//! bodies of every shape, and every documented refusal.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use rdkafka::mocking::MockCluster;

fn cluster(
    topics: &[(&str, i32)],
) -> (
    MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    String,
) {
    let cluster = MockCluster::new(1).unwrap();
    for (name, partitions) in topics {
        cluster.create_topic(name, *partitions, 1).unwrap();
    }
    let brokers = cluster.bootstrap_servers();
    (cluster, brokers)
}

const IDLE: Duration = Duration::from_secs(5);

/// The source document's test, on the example configuration: 1000 POSTs with ab, exactly
/// 1000 messages in the topic, each byte-equal to postdata.json.
#[test]
fn original_acceptance_test_with_ab() {
    let (_cluster, brokers) = cluster(&[("my-poc-topic-01", 3)]);
    let mut nginx = Nginx::start_example(&brokers);
    let out = Command::new("ab")
        .args([
            "-q",
            "-T",
            "application/json",
            "-H",
            "topic: my-poc-topic-01",
            "-n",
            "1000",
            "-p",
        ])
        .arg(repo().join("nginx/postdata.json"))
        .arg(format!("http://{}", nginx.url("/putmessage")))
        .output()
        .expect("ab (apt: apache2-utils) runs");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("Complete requests:      1000"), "{report}");
    assert!(report.contains("Failed requests:        0"), "{report}");
    assert!(!report.contains("Non-2xx responses"), "{report}");

    let records = consume(&brokers, "my-poc-topic-01", 1000, IDLE);
    assert_eq!(records.len(), 1000);
    let body = postdata();
    assert!(records.iter().all(|r| r.value == body && r.key.is_none()));
    let partitions: std::collections::HashSet<_> = records.iter().map(|r| r.partition).collect();
    assert!(
        partitions.len() > 1,
        "events without a key spread over partitions"
    );

    // librdkafka reports failures only; the workers still count what they delivered.
    nginx.quit();
    let log = nginx.log("error.log");
    assert_eq!(exit_counts(&log), (1000, 0), "{log}");
}

/// `kafka_value_format body_data` writes what the Lua script's cjson.encode wrote.
#[test]
fn lua_compatible_value() {
    let (_cluster, brokers) = cluster(&[("my-poc-topic-01", 1)]);
    let nginx = Nginx::start_example(&brokers);
    let body = b"{\"page\":\"www.example.com/a.html\",\"q\":\"say \\\"hi\\\"\"}\n\t\x01";
    let r = post(
        nginx.port,
        "/putmessage/lua-compatible",
        "my-poc-topic-01",
        body,
    );
    assert_eq!(r.status, 204);
    let records = consume(&brokers, "my-poc-topic-01", 1, IDLE);
    assert_eq!(records.len(), 1);
    assert_eq!(
        String::from_utf8(records[0].value.clone()).unwrap(),
        r#"{"body_data":"{\"page\":\"www.example.com\/a.html\",\"q\":\"say \\\"hi\\\"\"}\n\t\u0001"}"#
    );
}

/// `kafka_key $arg_uid`: all events of one uid land in one partition, keyed by the uid.
#[test]
fn events_of_one_key_share_a_partition() {
    let (_cluster, brokers) = cluster(&[("events", 3)]);
    let nginx = Nginx::start_example(&brokers);
    let mut http = Http::connect(nginx.port);
    let uids = ["alice", "bob", "carol", "dave", "erin", "frank"];
    for i in 0..20 {
        for uid in uids {
            let r = http.request(
                "POST",
                &format!("/events?uid={uid}"),
                &[],
                format!("{{\"n\":{i}}}").as_bytes(),
            );
            assert_eq!(r.status, 204);
        }
    }
    let records = consume(&brokers, "events", 120, IDLE);
    assert_eq!(records.len(), 120);
    let mut partition_of = std::collections::HashMap::new();
    for r in &records {
        let key = String::from_utf8(r.key.clone().expect("keyed")).unwrap();
        let p = *partition_of.entry(key.clone()).or_insert(r.partition);
        assert_eq!(p, r.partition, "uid {key} in two partitions");
    }
    assert_eq!(partition_of.len(), uids.len());
    let used: std::collections::HashSet<_> = partition_of.values().collect();
    assert!(
        used.len() > 1,
        "six keys over three partitions use more than one"
    );
}

fn bodies_conf() -> String {
    conf_with(
        "kafka_option message.max.bytes 3000000;\n\
         client_max_body_size 2m;\n\
         client_body_buffer_size 16k;",
        "location = /in { kafka_ingest; kafka_topic bodies; }\n\
         location = /small { kafka_ingest; kafka_topic bodies; client_max_body_size 100; }\n\
         location = /by-header { kafka_ingest; kafka_topic $http_topic; kafka_allowed_topics bodies open.*; }",
    )
}

/// A 1 MiB body (read into a temporary file), a chunked body, 100 keep-alive requests on one
/// connection and PUT all arrive byte for byte.
#[test]
fn bodies_of_every_shape_arrive_byte_for_byte() {
    let (_cluster, brokers) = cluster(&[("bodies", 1)]);
    let nginx = Nginx::start_conf(&bodies_conf(), &brokers);
    let mut expected: Vec<Vec<u8>> = Vec::new();

    let big: Vec<u8> = (0..1024 * 1024).map(|i| (i * 7 % 251) as u8).collect();
    let r = Http::connect(nginx.port).request("POST", "/in", &[], &big);
    assert_eq!(r.status, 204, "{}", r.text());
    expected.push(big);

    let chunked = b"POST /in HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
                    5\r\nhello\r\n7\r\n, chunk\r\n0\r\n\r\n";
    let r = Http::connect(nginx.port).send_raw(chunked);
    assert_eq!(r.status, 204);
    expected.push(b"hello, chunk".to_vec());

    let mut http = Http::connect(nginx.port);
    for i in 0..100 {
        let body = format!("{{\"keepalive\":{i}}}").into_bytes();
        let r = http.request("POST", "/in", &[], &body);
        assert_eq!(r.status, 204);
        expected.push(body);
    }
    let r = http.request("PUT", "/in", &[], b"put");
    assert_eq!(r.status, 204);
    expected.push(b"put".to_vec());

    let records = consume(&brokers, "bodies", expected.len(), IDLE);
    let got: Vec<Vec<u8>> = records.into_iter().map(|r| r.value).collect();
    assert_eq!(got.len(), expected.len());
    assert!(got == expected, "messages differ from the bodies posted");
    assert!(nginx
        .logs()
        .contains("a client request body is buffered to a temporary file"));
}

/// Every refusal has its status and JSON body, and nothing refused reaches Kafka.
#[test]
fn refusals_are_clear_and_produce_nothing() {
    let (_cluster, brokers) = cluster(&[("bodies", 1), ("open.a", 1)]);
    let nginx = Nginx::start_conf(&bodies_conf(), &brokers);
    let mut http = Http::connect(nginx.port);

    let r = http.request("GET", "/in", &[], b"");
    assert_eq!((r.status, r.header("allow")), (405, Some("POST, PUT")));
    assert!(r.text().contains("\"error\":\"method_not_allowed\""));
    assert_eq!(r.header("content-type"), Some("application/json"));

    let r = http.request("POST", "/in", &[], b"");
    assert_eq!(r.status, 400);
    assert!(r.text().contains("empty_body"));

    let r = http.request("POST", "/by-header", &[], b"{}");
    assert_eq!(r.status, 400);
    assert!(r.text().contains("no_topic"));

    let r = http.request("POST", "/by-header", &[("topic", "secret")], b"{}");
    assert_eq!(r.status, 403);
    assert!(r.text().contains("topic_not_allowed"));

    let r = http.request("POST", "/by-header", &[("topic", "open.a b")], b"{}");
    assert_eq!(r.status, 400);
    assert!(r.text().contains("invalid_topic"));

    // The connection survived every refusal above.
    let r = http.request("POST", "/by-header", &[("topic", "open.a")], b"allowed");
    assert_eq!(r.status, 204);

    // client_max_body_size, declared and chunked.
    let r = Http::connect(nginx.port).request("POST", "/small", &[], &[b'x'; 200]);
    assert_eq!(r.status, 413);
    let chunked = format!(
        "POST /small HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nc8\r\n{}\r\n0\r\n\r\n",
        "y".repeat(200)
    );
    let r = Http::connect(nginx.port).send_raw(chunked.as_bytes());
    assert_eq!(r.status, 413);
    assert!(r.text().contains("too_large"), "{}", r.text());

    let bodies = consume(&brokers, "bodies", 1, Duration::from_secs(2));
    assert!(
        bodies.is_empty(),
        "refused events reached Kafka: {bodies:?}"
    );
    let open = consume(&brokers, "open.a", 1, IDLE);
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].value, b"allowed");
}

/// An event over librdkafka's `message.max.bytes` is refused with 413, not accepted and lost.
#[test]
fn over_message_max_bytes_is_413() {
    let (_cluster, brokers) = cluster(&[("bodies", 1)]);
    let conf = conf_with(
        "kafka_option message.max.bytes 1000;",
        "location = /in { kafka_ingest; kafka_topic bodies; }",
    );
    let nginx = Nginx::start_conf(&conf, &brokers);
    let mut http = Http::connect(nginx.port);
    let r = http.request("POST", "/in", &[], &[b'z'; 5000]);
    assert_eq!(r.status, 413);
    assert!(r.text().contains("too_large"));
    let r = http.request("POST", "/in", &[], b"fits");
    assert_eq!(r.status, 204);
    let records = consume(&brokers, "bodies", 1, IDLE);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].value, b"fits");
}

/// The example configuration answers a body over client_max_body_size with JSON too.
#[test]
fn example_refuses_oversized_bodies_as_json() {
    let (_cluster, brokers) = cluster(&[("my-poc-topic-01", 1)]);
    let nginx = Nginx::start_example(&brokers);
    let big = vec![b'x'; 2 * 1024 * 1024];
    let r = Http::connect(nginx.port).post("/putmessage", "my-poc-topic-01", &big);
    assert_eq!(r.status, 413);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(r.text().contains("\"error\":\"too_large\""), "{}", r.text());
    assert!(consume(&brokers, "my-poc-topic-01", 1, Duration::from_secs(2)).is_empty());
}

/// `kafka_header`: values with variables, an empty value adds nothing, and a location with
/// its own headers does not inherit the enclosing level's (as `add_header`).
#[test]
fn headers_reach_kafka() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};

    let (_cluster, brokers) = cluster(&[("hdr", 1)]);
    let conf = conf_with(
        "kafka_header id $arg_id; kafka_header src nginx-test; kafka_header empty $arg_none;",
        "location = /a { kafka_ingest; kafka_topic hdr; }\n\
         location = /b { kafka_ingest; kafka_topic hdr; kafka_header only \"b $arg_id\"; }",
    );
    let nginx = Nginx::start_conf(&conf, &brokers);
    let mut http = Http::connect(nginx.port);
    assert_eq!(http.request("POST", "/a?id=r1", &[], b"one").status, 204);
    assert_eq!(http.request("POST", "/b?id=r2", &[], b"two").status, 204);

    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "headers")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&["hdr"]).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut got = Vec::new();
    while got.len() < 2 && std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let headers: Vec<(String, Vec<u8>)> = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                        .collect()
                })
                .unwrap_or_default();
            got.push((m.payload().unwrap_or_default().to_vec(), headers));
        }
    }
    got.sort();
    let h = |k: &str, v: &str| (k.to_string(), v.as_bytes().to_vec());
    assert_eq!(
        got,
        vec![
            (b"one".to_vec(), vec![h("id", "r1"), h("src", "nginx-test")]),
            (b"two".to_vec(), vec![h("only", "b r2")]),
        ]
    );
}

/// `kafka_topic` and `kafka_key` that are one variable are read by the variable's index
/// rather than through nginx's script engine: they must give what nginx's own evaluation
/// gives. A braced header variable (`X-Topic` as `$http_x_topic`), an argument that is
/// absent (no key), a variable of `set`, a regex capture (`$1`, not a variable: the
/// script engine's path) and `$msec` (not cacheable: the script engine's path too) each
/// reach their topic with their key.
#[test]
fn one_variable_topic_and_key_evaluate_as_nginx_does() {
    let (_cluster, brokers) = cluster(&[("one", 1), ("two", 1)]);
    let conf = conf_with(
        "",
        "location = /braced { kafka_ingest; kafka_topic ${http_x_topic}; \
             kafka_allowed_topics one two; kafka_key $arg_k; }\n\
         location = /set { set $t two; kafka_ingest; kafka_topic $t; \
             kafka_allowed_topics one two; kafka_key ${t}; }\n\
         location ~ ^/capture/(one|two)$ { kafka_ingest; kafka_topic $1; \
             kafka_allowed_topics one two; }\n\
         location = /msec { kafka_ingest; kafka_topic one; kafka_key $msec; }",
    );
    let nginx = Nginx::start_conf(&conf, &brokers);
    let mut http = Http::connect(nginx.port);
    let sent = [
        ("/braced?k=u1", Some("one"), b"a".as_slice()),
        ("/braced", Some("two"), b"b"),
        ("/set", None, b"c"),
        ("/capture/two", None, b"d"),
    ];
    for (path, topic, body) in sent {
        let headers: Vec<(&str, &str)> = topic.map(|t| ("X-Topic", t)).into_iter().collect();
        let r = http.request("POST", path, &headers, body);
        assert_eq!(r.status, 204, "{path}: {}", r.text());
    }
    // `$msec` is not cacheable: evaluated as a complex value, into the request's pool.
    let r = http.request("POST", "/msec", &[], b"f");
    assert_eq!(r.status, 204, "{}", r.text());
    let r = http.request("POST", "/braced?k=u2", &[], b"e");
    assert_eq!(r.status, 400, "no X-Topic: no topic");
    assert!(r.text().contains("no_topic"), "{}", r.text());

    let one = consume(&brokers, "one", 2, IDLE);
    assert_eq!(one.len(), 2);
    assert_eq!(
        (one[0].value.as_slice(), one[0].key.as_deref()),
        (&b"a"[..], Some(&b"u1"[..]))
    );
    let msec = String::from_utf8(one[1].key.clone().expect("keyed by $msec")).unwrap();
    let (secs, ms) = msec.split_once('.').expect("seconds.milliseconds");
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    assert!(
        secs.len() >= 10 && ms.len() == 3 && digits(secs) && digits(ms),
        "{msec}"
    );
    assert_eq!(one[1].value, b"f");
    let mut two: Vec<_> = consume(&brokers, "two", 3, IDLE)
        .into_iter()
        .map(|r| (r.value, r.key))
        .collect();
    two.sort();
    assert_eq!(
        two,
        vec![
            (b"b".to_vec(), None),
            (b"c".to_vec(), Some(b"two".to_vec())),
            (b"d".to_vec(), None)
        ]
    );
}
