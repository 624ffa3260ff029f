//! `kafka_collect` and `kafka_sites`: every registry rule (unknown key, a key for another
//! domain, spoofed and missing Origin, Referer, wildcard subdomains, rotated keys), CORS and
//! the preflight, batches (JSON array, NDJSON) and their refusals, the pixel, the default
//! record headers and privacy options, per-site topics, keys and rates, `$kafka_site` with
//! nginx's own `limit_req`, and each tenant's stats. Every accepted event is read back from
//! Kafka; every refused one must not be there.

mod common;

use std::time::Duration;

use common::*;
use rdkafka::mocking::MockCluster;
use sha2::{Digest, Sha256};

const SHOP_KEY: &str = "0123456789abcdef0123456789abcdef";
const SHOP_KEY_NEW: &str = "fedcba9876543210fedcba9876543210";
const BLOG_KEY: &str = "00112233445566778899aabbccddeeff";
const SHOP_SECRET: &str = "shop-stats-secret-0001";
const BLOG_SECRET: &str = "blog-stats-secret-0002";
const SHOP: &str = "http://shop.localhost:8000";
const BLOG: &str = "http://blog.localhost";
const IDLE: Duration = Duration::from_secs(10);

fn hash(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Two sites: `shop` (two keys, a wildcard, its own topic) and `blog` (the location's topic
/// pattern, a key field, 5 events a second).
fn sites() -> String {
    format!(
        r#"{{"sites": [
  {{"id": "shop", "keys": ["{SHOP_KEY}", "{SHOP_KEY_NEW}"],
    "domains": ["shop.localhost", "*.shop.localhost"], "topic": "web-shop",
    "stats_secret_sha256": "{}"}},
  {{"id": "blog", "keys": ["{BLOG_KEY}"], "domains": ["blog.localhost"],
    "key_field": "uid", "rate": 5, "stats_secret_sha256": "{}"}}
]}}"#,
        hash(SHOP_SECRET),
        hash(BLOG_SECRET)
    )
}

const SERVER: &str = "location = /collect { kafka_collect; kafka_topic web-$kafka_site; }\n\
     location = /private {\n\
       kafka_collect; kafka_topic web-$kafka_site;\n\
       kafka_collect_client_ip truncate; kafka_collect_dnt drop;\n\
       kafka_header user_agent \"\"; kafka_header page $http_x_page;\n\
     }\n\
     location = /limited { limit_req zone=per_site; kafka_collect; kafka_topic web-$kafka_site; }\n\
     location = /stats { kafka_site_stats; }";

struct Setup {
    _cluster: MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    brokers: String,
    nginx: Nginx,
}

fn start() -> Setup {
    let cluster = MockCluster::new(1).unwrap();
    for t in ["web-shop", "web-blog"] {
        cluster.create_topic(t, 1, 1).unwrap();
    }
    let brokers = cluster.bootstrap_servers();
    let conf = conf_with(
        "kafka_sites sites.json;\n\
         limit_req_zone $kafka_site zone=per_site:1m rate=1r/m;",
        SERVER,
    );
    let nginx = Nginx::start(&[("nginx.conf", &conf), ("sites.json", &sites())], &brokers);
    Setup {
        _cluster: cluster,
        brokers,
        nginx,
    }
}

fn send(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    Http::connect(port).request(method, path, headers, body)
}

fn post(port: u16, key: &str, origin: &str, body: &str) -> Response {
    send(
        port,
        "POST",
        &format!("/collect?key={key}"),
        &[("Origin", origin), ("Content-Type", "text/plain")],
        body.as_bytes(),
    )
}

/// A POST with an Origin and a Referer, each if given.
fn post_from(
    port: u16,
    key: &str,
    origin: Option<&str>,
    referer: Option<&str>,
    body: &str,
) -> Response {
    let mut headers = vec![];
    if let Some(o) = origin {
        headers.push(("Origin", o));
    }
    if let Some(r) = referer {
        headers.push(("Referer", r));
    }
    send(
        port,
        "POST",
        &format!("/collect?key={key}"),
        &headers,
        body.as_bytes(),
    )
}

fn error_of(r: &Response) -> String {
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
    v["error"].as_str().unwrap_or_default().to_string()
}

fn values(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .map(|r| String::from_utf8_lossy(&r.value).into_owned())
        .collect()
}

#[test]
fn preflight_and_cors_answer_only_registered_origins() {
    let s = start();
    let port = s.nginx.port;
    let preflight = |origin: &str, key: &str| {
        send(
            port,
            "OPTIONS",
            &format!("/collect?key={key}"),
            &[
                ("Origin", origin),
                ("Access-Control-Request-Method", "POST"),
                ("Access-Control-Request-Headers", "content-type"),
            ],
            b"",
        )
    };
    let r = preflight(SHOP, SHOP_KEY);
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(r.header("access-control-allow-origin"), Some(SHOP));
    assert_eq!(r.header("vary"), Some("Origin"));
    assert_eq!(r.header("access-control-max-age"), Some("86400"));
    assert!(r
        .header("access-control-allow-methods")
        .unwrap()
        .contains("POST"));
    assert!(r
        .header("access-control-allow-headers")
        .unwrap()
        .contains("Content-Type"));

    for (origin, key, error) in [
        ("http://evil.localhost", SHOP_KEY, "forbidden_origin"),
        ("null", SHOP_KEY, "forbidden_origin"),
        (SHOP, BLOG_KEY, "forbidden_origin"),
        (SHOP, "ffffffffffffffffffffffffffffffff", "unknown_key"),
    ] {
        let r = preflight(origin, key);
        assert_eq!(r.status, 403, "{origin} {key}: {}", r.text());
        assert_eq!(error_of(&r), error, "{origin} {key}");
        assert_eq!(
            r.header("access-control-allow-origin"),
            None,
            "never echoed"
        );
    }

    // A simple POST from the page: the exact origin is echoed, never `*`.
    let r = post(port, SHOP_KEY, SHOP, r#"{"type":"event","name":"a"}"#);
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(r.header("access-control-allow-origin"), Some(SHOP));
    assert_eq!(r.header("vary"), Some("Origin"));
    let got = consume(&s.brokers, "web-shop", 1, IDLE);
    assert_eq!(values(&got), [r#"{"type":"event","name":"a"}"#]);
}

#[test]
fn every_registry_rule() {
    let s = start();
    let port = s.nginx.port;
    let ev = |n: &str| format!(r#"{{"n":"{n}"}}"#);
    // Accepted: the registered host on any port and scheme, a rotated key, a subdomain at
    // any depth, the Referer of a request without Origin.
    let accepted = [
        (SHOP_KEY, Some(SHOP), None, "origin"),
        (SHOP_KEY, Some("https://shop.localhost"), None, "https"),
        (SHOP_KEY_NEW, Some(SHOP), None, "rotated"),
        (
            SHOP_KEY,
            Some("http://a.b.shop.localhost:81"),
            None,
            "wildcard",
        ),
        (SHOP_KEY, Some("http://SHOP.localhost"), None, "case"),
        (
            SHOP_KEY,
            None,
            Some("http://www.shop.localhost/page?x=1"),
            "referer",
        ),
    ];
    for (key, origin, referer, n) in accepted {
        let r = post_from(port, key, origin, referer, &ev(n));
        assert_eq!(r.status, 204, "{n}: {}", r.text());
    }
    // Refused, each with its reason, and nothing produced.
    let refused = [
        (
            SHOP_KEY,
            Some("http://evil.localhost"),
            None,
            "forbidden_origin",
            "spoofed",
        ),
        (
            SHOP_KEY,
            Some("http://shop.localhost.evil.example"),
            None,
            "forbidden_origin",
            "suffix",
        ),
        (
            SHOP_KEY,
            Some("http://xshop.localhost"),
            None,
            "forbidden_origin",
            "prefix",
        ),
        (SHOP_KEY, None, None, "no_origin", "missing"),
        (
            SHOP_KEY,
            None,
            Some("http://evil.localhost/"),
            "forbidden_origin",
            "bad referer",
        ),
        (
            BLOG_KEY,
            Some(SHOP),
            None,
            "forbidden_origin",
            "another site's key",
        ),
        (
            "0000000000000000000000000000000f",
            Some(SHOP),
            None,
            "unknown_key",
            "unknown",
        ),
        ("", Some(SHOP), None, "unknown_key", "no key"),
    ];
    for (key, origin, referer, error, n) in refused {
        let r = post_from(port, key, origin, referer, &ev(n));
        assert_eq!(r.status, 403, "{n}: {}", r.text());
        assert_eq!(error_of(&r), error, "{n}");
    }
    let got = consume(&s.brokers, "web-shop", accepted.len(), IDLE);
    let want: Vec<String> = accepted.iter().map(|a| ev(a.3)).collect();
    assert_eq!(
        values(&got),
        want,
        "the accepted events, in order, and nothing else"
    );
    assert!(consume(&s.brokers, "web-blog", 1, Duration::from_secs(2)).is_empty());
}

#[test]
fn default_headers_key_field_and_site_topic() {
    let s = start();
    let port = s.nginx.port;
    let r = send(
        port,
        "POST",
        &format!("/collect?key={SHOP_KEY}"),
        &[("Origin", SHOP), ("User-Agent", "test-agent/1.0")],
        br#"{"type":"pageview"}"#,
    );
    assert_eq!(r.status, 204, "{}", r.text());
    let got = consume(&s.brokers, "web-shop", 1, IDLE);
    let h = |n: &str| String::from_utf8_lossy(got[0].header(n).unwrap_or(b"<none>")).into_owned();
    assert_eq!(h("site"), "shop");
    assert_eq!(h("client_ip"), "127.0.0.1");
    assert_eq!(h("user_agent"), "test-agent/1.0");
    let received: u64 = h("received_ms").parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(
        received <= now && now - received < 60_000,
        "{received} vs {now}"
    );
    let id = h("request_id");
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    assert_eq!(got[0].key, None);

    // `blog` has no topic of its own: `web-$kafka_site`; its key is the event's `uid`.
    let body = "{\"uid\":\"u-1\",\"n\":1}\n{\"uid\":42,\"n\":2}\n{\"n\":3}\n";
    let r = post(port, BLOG_KEY, BLOG, body);
    assert_eq!(r.status, 204, "{}", r.text());
    let got = consume(&s.brokers, "web-blog", 3, IDLE);
    assert_eq!(
        values(&got),
        [
            r#"{"uid":"u-1","n":1}"#,
            r#"{"uid":42,"n":2}"#,
            r#"{"n":3}"#
        ]
    );
    let keys: Vec<Option<Vec<u8>>> = got.iter().map(|r| r.key.clone()).collect();
    assert_eq!(keys, [Some(b"u-1".to_vec()), Some(b"42".to_vec()), None]);
    assert_eq!(got[0].header("site"), Some(&b"blog"[..]));
}

#[test]
fn privacy_options_and_header_overrides() {
    let s = start();
    let port = s.nginx.port;
    let path = format!("/private?key={SHOP_KEY}");
    let headers = [("Origin", SHOP), ("User-Agent", "ua"), ("X-Page", "home")];
    assert_eq!(
        send(port, "POST", &path, &headers, br#"{"n":1}"#).status,
        204
    );
    // Do Not Track, and Global Privacy Control: answered, counted, not collected.
    for h in [("DNT", "1"), ("Sec-GPC", "1")] {
        let r = send(
            port,
            "POST",
            &path,
            &[("Origin", SHOP), h],
            br#"{"n":"dnt"}"#,
        );
        assert_eq!(r.status, 204, "{}", r.text());
    }
    let got = consume(&s.brokers, "web-shop", 1, IDLE);
    assert_eq!(
        values(&got),
        [r#"{"n":1}"#],
        "the DNT events are not collected"
    );
    assert_eq!(
        got[0].header("client_ip"),
        Some(&b"127.0.0.0"[..]),
        "truncated"
    );
    assert_eq!(
        got[0].header("user_agent"),
        None,
        "removed by an empty kafka_header"
    );
    assert_eq!(got[0].header("page"), Some(&b"home"[..]));
    assert_eq!(got[0].header("site"), Some(&b"shop"[..]));

    let stats = stats(port, SHOP_SECRET, "");
    assert_eq!(stats["events"]["dnt"], 2, "{stats}");
}

#[test]
fn batches_are_taken_whole_in_order_or_refused_whole() {
    let s = start();
    let port = s.nginx.port;
    let events: Vec<String> = (0..500)
        .map(|i| {
            format!(
                r#"{{"type":"event","seq":{i},"pad":"{}"}}"#,
                "x".repeat(150)
            )
        })
        .collect();
    let array = format!("[{}]", events.join(","));
    let r = post(port, SHOP_KEY, SHOP, &array);
    assert_eq!(r.status, 204, "{}", r.text());
    let ndjson = "{\"seq\":500}\n{\"seq\":501}\r\n\n{\"seq\":502}";
    assert_eq!(post(port, SHOP_KEY, SHOP, ndjson).status, 204);

    // Refused whole: the answer names the bad events; nothing of them is produced.
    let r = post(
        port,
        SHOP_KEY,
        SHOP,
        r#"[{"seq":"bad-1"}, 2, {"seq":"bad-2"}, "x"]"#,
    );
    assert_eq!(r.status, 400, "{}", r.text());
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["error"], "invalid_event");
    assert_eq!(v["events"], serde_json::json!([1, 3]));
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some(SHOP),
        "the page can read why"
    );
    let r = post(port, SHOP_KEY, SHOP, "{\"seq\":\"bad-3\"}\n{\"seq\":");
    assert_eq!(
        (r.status, error_of(&r)),
        (400, "invalid_event".into()),
        "{}",
        r.text()
    );
    let r = post(port, SHOP_KEY, SHOP, "not json");
    assert_eq!((r.status, error_of(&r)), (400, "invalid_event".into()));
    let many = format!("[{}]", vec![r#"{"seq":"bad-4"}"#; 1001].join(","));
    let r = post(port, SHOP_KEY, SHOP, &many);
    assert_eq!(
        (r.status, error_of(&r)),
        (413, "too_many_events".into()),
        "{}",
        r.text()
    );
    let big = format!(r#"[{{"seq":"bad-5"}},{{"pad":"{}"}}]"#, "x".repeat(40_000));
    let r = post(port, SHOP_KEY, SHOP, &big);
    assert_eq!(
        (r.status, error_of(&r)),
        (413, "too_large".into()),
        "{}",
        r.text()
    );
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["events"], serde_json::json!([1]));

    let got = consume(&s.brokers, "web-shop", 503, Duration::from_secs(20));
    let mut want = events.clone();
    want.extend(["{\"seq\":500}", "{\"seq\":501}", "{\"seq\":502}"].map(String::from));
    assert_eq!(
        got.len(),
        503,
        "500 + 3 events, nothing of the refused batches"
    );
    assert!(values(&got) == want, "every event, byte for byte, in order");
}

#[test]
fn the_pixel_delivers_its_query_as_one_event() {
    let s = start();
    let port = s.nginx.port;
    let r = send(
        port,
        "GET",
        &format!("/collect?key={SHOP_KEY}&type=pageview&url=http%3A%2F%2Fshop.localhost%2F%3Fa%3D1&p.plan=pro+x"),
        &[("Referer", "http://shop.localhost/landing")],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("image/gif"));
    assert_eq!(r.body.len(), 43);
    assert!(r.body.starts_with(b"GIF89a"));
    assert!(r.header("cache-control").unwrap().contains("no-store"));
    // From another page: refused, nothing produced.
    let r = send(
        port,
        "GET",
        &format!("/collect?key={SHOP_KEY}&type=pageview"),
        &[("Referer", "http://evil.localhost/")],
        b"",
    );
    assert_eq!(r.status, 403);
    let got = consume(&s.brokers, "web-shop", 1, IDLE);
    assert_eq!(
        values(&got),
        [r#"{"type":"pageview","url":"http://shop.localhost/?a=1","p.plan":"pro x"}"#]
    );
}

#[test]
fn per_site_rate_and_limit_req_on_kafka_site() {
    let s = start();
    let port = s.nginx.port;
    // `rate: 5`: a second holds 5 events; the sixth is refused until the next second.
    // Tried a few times, in case a second ends between the two requests.
    let batch = |from: usize| {
        let list: Vec<String> = (from..from + 5)
            .map(|i| format!(r#"{{"i":{i}}}"#))
            .collect();
        format!("[{}]", list.join(","))
    };
    let mut limited = None;
    let mut taken = 0;
    for attempt in 0..5 {
        let r = post(port, BLOG_KEY, BLOG, &batch(attempt * 10));
        if r.status == 204 {
            taken += 5;
        }
        let r = post(port, BLOG_KEY, BLOG, r#"{"i":"over"}"#);
        if r.status == 429 {
            limited = Some(r);
            break;
        }
        taken += 1;
        std::thread::sleep(Duration::from_millis(1100));
    }
    let r = limited.expect("the sixth event of a second is refused");
    assert_eq!(error_of(&r), "rate_limited");
    assert_eq!(r.header("retry-after"), Some("1"));
    // The other site is not limited by it.
    assert_eq!(post(port, SHOP_KEY, SHOP, r#"{"n":1}"#).status, 204);
    let got = consume(&s.brokers, "web-blog", taken, IDLE);
    assert_eq!(got.len(), taken);

    // `limit_req_zone $kafka_site ... rate=1r/m`: one request per site and minute. The blog's
    // own `rate: 5` refused it above: a new second gives it room again, so that what
    // refuses it below can only be limit_req.
    std::thread::sleep(Duration::from_millis(1100));
    let limited = |key: &str, origin: &str| {
        send(
            port,
            "POST",
            &format!("/limited?key={key}"),
            &[("Origin", origin)],
            b"{}",
        )
        .status
    };
    assert_eq!(limited(SHOP_KEY, SHOP), 204);
    assert_eq!(
        limited(SHOP_KEY, SHOP),
        503,
        "limit_req, keyed by $kafka_site"
    );
    assert_eq!(
        limited(BLOG_KEY, BLOG),
        204,
        "another site has its own bucket"
    );
}

fn stats(port: u16, secret: &str, query: &str) -> serde_json::Value {
    let r = send(
        port,
        "GET",
        &format!("/stats{query}"),
        &[("Authorization", &format!("Bearer {secret}"))],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    serde_json::from_slice(&r.body).unwrap()
}

#[test]
fn each_tenant_sees_its_own_stats_only() {
    let s = start();
    let port = s.nginx.port;
    assert_eq!(
        post(port, SHOP_KEY, SHOP, r#"[{"a":1},{"a":2}]"#).status,
        204
    );
    assert_eq!(
        post(port, SHOP_KEY, "http://evil.localhost", r#"{"a":3}"#).status,
        403
    );
    assert_eq!(post(port, BLOG_KEY, BLOG, r#"{"a":4}"#).status, 204);

    let shop = stats(port, SHOP_SECRET, "");
    assert_eq!(shop["site"], "shop");
    assert_eq!(shop["events"]["accepted"], 2, "{shop}");
    assert_eq!(shop["events"]["forbidden_origin"], 1, "{shop}");
    assert_eq!(shop["accepted_bytes"], 14, "{shop}");
    assert_eq!(stats(port, SHOP_SECRET, "?site=shop")["site"], "shop");
    let blog = stats(port, BLOG_SECRET, "");
    assert_eq!(
        (blog["site"].clone(), blog["events"]["accepted"].clone()),
        ("blog".into(), 1.into())
    );

    let status = |headers: &[(&str, &str)], query: &str| {
        send(port, "GET", &format!("/stats{query}"), headers, b"").status
    };
    assert_eq!(status(&[], ""), 401, "no secret");
    assert_eq!(status(&[("Authorization", "Bearer wrong")], ""), 401);
    // The public key is not a secret.
    assert_eq!(
        status(&[("Authorization", &format!("Bearer {SHOP_KEY}"))], ""),
        401
    );
    let auth = format!("Bearer {SHOP_SECRET}");
    assert_eq!(
        status(&[("Authorization", &auth)], "?site=blog"),
        403,
        "another's stats"
    );
    let r = send(port, "GET", "/stats", &[], b"");
    assert!(r.header("www-authenticate").unwrap().starts_with("Bearer"));
    s.nginx.check_logs();
}

#[test]
fn nginx_t_checks_sites_and_collect_locations() {
    let dir = TempDir::new("collect-conf");
    let good = dir.0.join("sites.json");
    std::fs::write(&good, sites()).unwrap();
    let bad = dir.0.join("bad.json");
    std::fs::write(
        &bad,
        r#"{"sites":[{"id":"x","keys":["short"],"domains":["a.example"]}]}"#,
    )
    .unwrap();
    let check = |http: &str, server: &str| config_test(&conf_with(http, server));
    let sites = |p: &std::path::Path| format!("kafka_sites {};", p.display());

    let (ok, out) = check(
        &sites(&good),
        SERVER.split("location = /limited").next().unwrap(),
    );
    assert!(ok, "{out}");
    for (http, server, expected) in [
        (
            sites(&bad),
            "".to_string(),
            format!("\"kafka_sites\" \"{}\": ", bad.display()),
        ),
        (
            "kafka_sites /nonexistent/sites.json;".into(),
            "".into(),
            "\"kafka_sites\" \"/nonexistent/sites.json\"".into(),
        ),
        (
            String::new(),
            "location /c { kafka_collect; kafka_topic t; }".into(),
            "\"kafka_collect\" requires \"kafka_sites\"".into(),
        ),
        (
            sites(&good),
            "location /c { kafka_collect; }".into(),
            "site \"blog\" has no topic".into(),
        ),
        (
            sites(&good),
            "location /c { kafka_collect; kafka_topic t; kafka_delivery acked; }".into(),
            "\"kafka_collect\" takes \"kafka_delivery queued\" or \"durable\"".into(),
        ),
        (
            String::new(),
            "location /s { kafka_site_stats; }".into(),
            "\"kafka_site_stats\" requires \"kafka_sites\"".into(),
        ),
        (
            sites(&good),
            "location /c { kafka_collect; kafka_topic t; kafka_collect_client_ip maybe; }".into(),
            "invalid value \"maybe\"".into(),
        ),
    ] {
        let (ok, out) = check(&http, &server);
        assert!(!ok, "accepted: {http} {server}\n{out}");
        assert!(
            out.contains("[emerg]") && out.contains(&expected),
            "{expected:?} in:\n{out}"
        );
    }
}
