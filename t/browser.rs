//! The SDK in a real browser: Debian's headless Chromium (driven by playwright-core,
//! t/browser/drive.js) loads the demo page (sdk/demo/index.html) from one origin
//! (shop.localhost), which embeds kc.js from the collector on another (collect.localhost);
//! nginx with this module serves both. The page view and the clicked events must arrive in
//! the site's topic with the collector's record headers; the same page from an unregistered
//! origin (evil.localhost) must be refused and produce nothing; with sendBeacon and fetch
//! taken away from the page, the pixel must deliver. Chromium resolves every *.localhost
//! name to the loopback address by itself.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use rdkafka::mocking::MockCluster;
use serde_json::Value;
use sha2::{Digest, Sha256};

const KEY: &str = "0123456789abcdef0123456789abcdef";
const SECRET: &str = "browser-test-stats-secret";

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

/// One line of the access log: host, method, status, Origin, Referer, Cache-Control sent, URI.
#[derive(Debug)]
struct Hit {
    host: String,
    method: String,
    status: u16,
    origin: String,
    referer: String,
    cache_control: String,
    uri: String,
}

fn hits(log: &str) -> Vec<Hit> {
    log.lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            Hit {
                host: f[0].into(),
                method: f[1].into(),
                status: f[2].parse().unwrap(),
                origin: f[3].into(),
                referer: f[4].into(),
                cache_control: f[5].into(),
                uri: f[6].into(),
            }
        })
        .collect()
}

#[test]
fn chromium_page_views_and_events_reach_the_sites_topic() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("web-shop", 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let secret_hash: String = Sha256::digest(SECRET.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let sites = format!(
        r#"{{"sites": [{{"id": "shop", "keys": ["{KEY}"], "domains": ["shop.localhost"],
            "topic": "web-shop", "stats_secret_sha256": "{secret_hash}"}}]}}"#
    );
    let kc = repo().join("sdk/dist/kc.js");
    let conf = conf_with(
        "kafka_sites sites.json;\n\
         log_format hits '$host\\t$request_method\\t$status\\t$http_origin\\t$http_referer\\t$sent_http_cache_control\\t$uri';",
        &format!(
            "access_log logs/hits.log hits;\n\
             location = /kc.js {{\n\
               alias {};\n\
               default_type application/javascript;\n\
               add_header Cache-Control \"public, max-age=3600\";\n\
             }}\n\
             location = /collect {{ kafka_collect; }}\n\
             location = /stats {{ kafka_site_stats; }}\n\
             location / {{ root conf/pages; }}",
            kc.display()
        ),
    );
    // The demo page as it is in the tree, its collector on this test's port.
    let page = std::fs::read_to_string(repo().join("sdk/demo/index.html"))
        .unwrap()
        .replace("collect.localhost:8080", "collect.localhost:{port}");
    assert!(page.contains(&format!("kc.js?key={KEY}")));
    let nginx = Nginx::start(
        &[
            ("nginx.conf", &conf),
            ("sites.json", &sites),
            ("pages/index.html", &page),
        ],
        &brokers,
    );
    let port = nginx.port;

    let dir = TempDir::new("browser");
    let screenshot = repo().join("build/browser/demo.png");
    let shop = format!("http://shop.localhost:{port}/");
    let evil = format!("http://evil.localhost:{port}/");
    let plan = serde_json::json!({
        "profile": dir.0.join("profile"),
        "visits": [
            {"url": shop, "click": ["#add", "#signup"], "screenshot": screenshot},
            {"url": evil, "click": ["#add"]},
            {"url": format!("{shop}?pixel"), "click": ["#add"], "disable": ["sendBeacon", "fetch"]},
        ],
    });
    let plan_path = dir.0.join("plan.json");
    std::fs::write(&plan_path, plan.to_string()).unwrap();
    let started = now_ms();
    let out = Command::new("node")
        .arg(repo().join("t/browser/drive.js"))
        .arg(&plan_path)
        .output()
        .expect("node runs (scripts/deps.sh test installs it, and sdk/'s npm packages)");
    let finished = now_ms();
    assert!(
        out.status.success(),
        "the browser driver failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    println!("{}", report["visits"][0]["agent"]);
    for v in report["visits"].as_array().unwrap() {
        assert_eq!(v["loaded"], true, "kc.js did not load in {v}");
        assert_eq!(v["errors"], serde_json::json!([]), "page errors in {v}");
    }
    assert!(screenshot.exists());

    // What Kafka has: 3 events of the beacon visit, 2 of the pixel visit, none of evil's.
    let records = consume(&brokers, "web-shop", 6, Duration::from_secs(10));
    let events: Vec<Value> = records
        .iter()
        .map(|r| serde_json::from_slice(&r.value).unwrap())
        .collect();
    let (beacon, pixel): (Vec<&Value>, Vec<&Value>) =
        events.iter().partition(|e| e["ts"].is_number());
    assert_eq!(events.len(), 5, "{events:#?}");

    let names = |es: &[&Value]| -> Vec<String> {
        es.iter()
            .map(|e| e["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(&beacon), ["page_view", "add_to_cart", "signup"]);
    assert_eq!(beacon[0]["type"], "pageview");
    assert_eq!(beacon[0]["url"], shop.as_str());
    assert_eq!(beacon[0]["title"], "Demo shop — nginx-kafka kc.js");
    assert_eq!(beacon[1]["type"], "event");
    assert_eq!(
        beacon[1]["props"],
        serde_json::json!({"sku": "KC-1", "price": 19.9})
    );
    assert_eq!(beacon[2]["props"], serde_json::json!({"plan": "pro"}));
    for e in &beacon {
        let ts = e["ts"].as_u64().unwrap() as u128;
        assert!(started <= ts && ts <= finished, "{e}");
    }
    // The pixel's events are flat objects of strings, props as p.NAME; images load in
    // parallel, so their order is not promised.
    let mut pixel_names = names(&pixel);
    pixel_names.sort();
    assert_eq!(pixel_names, ["add_to_cart", "page_view"]);
    let add = pixel.iter().find(|e| e["name"] == "add_to_cart").unwrap();
    assert_eq!(
        (
            add["type"].as_str(),
            add["p.sku"].as_str(),
            add["p.price"].as_str()
        ),
        (Some("event"), Some("KC-1"), Some("19.9"))
    );
    assert_eq!(add["url"], format!("{shop}?pixel").as_str());

    // The collector's record headers, on every event.
    for r in &records {
        let h = |n: &str| String::from_utf8_lossy(r.header(n).unwrap_or_default()).into_owned();
        assert_eq!(h("site"), "shop");
        assert_eq!(h("client_ip"), "127.0.0.1");
        assert!(h("user_agent").contains("Chrome/"), "{}", h("user_agent"));
        let received: u128 = h("received_ms").parse().unwrap();
        assert!(started <= received && received <= finished + 1000);
        assert_eq!(h("request_id").len(), 32);
    }

    // What nginx saw: the SDK from the collector with its caching header; the beacons as
    // cross-origin POSTs from the shop answered 204; evil's refused with 403; the pixel's
    // GETs with the shop as Referer answered 200 (the GIF).
    let hits = hits(&std::fs::read_to_string(nginx.prefix.0.join("logs/hits.log")).unwrap());
    let collect = |origin_host: &str| -> BTreeMap<(String, u16), usize> {
        let mut m = BTreeMap::new();
        for h in hits.iter().filter(|h| h.uri == "/collect") {
            let from = if h.origin == "-" {
                &h.referer
            } else {
                &h.origin
            };
            if from.contains(origin_host) {
                *m.entry((h.method.clone(), h.status)).or_default() += 1;
            }
        }
        m
    };
    let sdk: Vec<&Hit> = hits.iter().filter(|h| h.uri == "/kc.js").collect();
    // Three visits, but the shop's second one takes kc.js from the browser's cache.
    assert_eq!(sdk.len(), 2, "{hits:#?}");
    assert!(sdk.iter().all(|h| h.host == "collect.localhost"
        && h.status == 200
        && h.cache_control == "public, max-age=3600"));
    let shop_hits = collect("//shop.localhost:");
    assert!(shop_hits.contains_key(&("POST".into(), 204)), "{hits:#?}");
    assert_eq!(shop_hits.get(&("GET".into(), 200)), Some(&2), "{hits:#?}");
    assert_eq!(
        shop_hits.keys().filter(|(_, s)| *s >= 300).count(),
        0,
        "{hits:#?}"
    );
    let evil_hits = collect("//evil.localhost:");
    assert!(
        !evil_hits.is_empty(),
        "the evil page sent nothing: {hits:#?}"
    );
    assert!(
        evil_hits.keys().all(|(_, status)| *status == 403),
        "{evil_hits:?}"
    );
    assert!(hits
        .iter()
        .filter(|h| h.uri == "/collect")
        .all(|h| h.host == "collect.localhost"));

    // The refusals are counted for the site.
    let r = Http::connect(port).request(
        "GET",
        "/stats",
        &[("Authorization", &format!("Bearer {SECRET}"))],
        b"",
    );
    let stats: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(stats["events"]["accepted"], 5, "{stats}");
    assert!(
        stats["events"]["forbidden_origin"].as_u64().unwrap() >= 1,
        "{stats}"
    );
    nginx.check_logs();
}
