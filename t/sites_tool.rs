//! `build/bin/kafka-sites`: a site registered, its key rotated and the old one retired, its
//! stats secret replaced — each change read by nginx on `nginx -s reload` and checked with
//! real requests (the events read back from Kafka); bad changes refused with the file left as
//! it was; `check` agreeing with `nginx -t`.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use common::*;
use rdkafka::mocking::MockCluster;

const SHOP: &str = "http://shop.localhost";

/// Runs the tool: (exit status, stdout, stderr).
fn tool(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(repo().join("build/bin/kafka-sites"))
        .args(args)
        .output()
        .expect("build/bin/kafka-sites runs (make build)");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(args: &[&str]) -> Vec<String> {
    let (code, out, err) = tool(args);
    assert_eq!(code, 0, "kafka-sites {args:?}: {err}");
    out.lines().map(str::to_string).collect()
}

fn is_key(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn post(port: u16, key: &str, origin: &str, body: &str) -> u16 {
    Http::connect(port)
        .request(
            "POST",
            &format!("/collect?key={key}"),
            &[("Origin", origin), ("Content-Type", "text/plain")],
            body.as_bytes(),
        )
        .status
}

fn stats(port: u16, secret: &str) -> (u16, serde_json::Value) {
    let r = Http::connect(port).request(
        "GET",
        "/stats",
        &[("Authorization", &format!("Bearer {secret}"))],
        b"",
    );
    (
        r.status,
        serde_json::from_slice(&r.body).unwrap_or_default(),
    )
}

#[test]
fn register_rotate_retire_and_replace_the_secret() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("web-shop", 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let dir = TempDir::new("sites-tool");
    let file = dir.0.join("sites.json");
    let f = file.to_str().unwrap();

    // Register: key alone on the first line, the script tag, the stats secret.
    let out = ok(&[
        "add",
        "--file",
        f,
        "--id",
        "shop",
        "--domain",
        "shop.localhost",
        "--domain",
        "*.shop.localhost",
        "--topic",
        "web-shop",
        "--collector",
        "https://collect.example/",
    ]);
    assert_eq!(out.len(), 3, "{out:?}");
    let key1 = out[0].clone();
    assert!(is_key(&key1), "{out:?}");
    assert_eq!(
        out[1],
        format!("<script async src=\"https://collect.example/kc.js?key={key1}\"></script>")
    );
    let secret1 = out[2].strip_prefix("stats secret: ").unwrap().to_string();
    assert!(secret1.len() >= 32 && secret1 != key1);
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o640
    );
    // Another site, its id made from its domain; keys are never reused.
    let blog = ok(&["add", "--file", f, "--domain", "blog.localhost"]);
    assert!(is_key(&blog[0]) && blog[0] != key1);
    let list = ok(&["list", "--file", f]);
    assert_eq!(list.len(), 2, "{list:?}");
    assert!(
        list[0].starts_with(&format!(
            "shop keys={key1} domains=shop.localhost,*.shop.localhost topic=web-shop"
        )),
        "{list:?}"
    );
    assert!(list[1].starts_with("blog-localhost "), "{list:?}");
    ok(&["check", "--file", f]);

    let conf = conf_with(
        &format!("kafka_sites {f};"),
        "location = /collect { kafka_collect; kafka_topic web-$kafka_site; }\n location = /stats { kafka_site_stats; }",
    );
    let nginx = Nginx::start(&[("nginx.conf", &conf)], &brokers);
    let port = nginx.port;
    let mut sent = Vec::new();
    let mut accept = |key: &str, origin: &str, body: &str| {
        assert_eq!(post(port, key, origin, body), 204, "{key} from {origin}");
        sent.push(body.to_string());
    };
    accept(&key1, SHOP, r#"{"n":1}"#);
    accept(&key1, "https://a.b.shop.localhost:8443", r#"{"n":2}"#);
    assert_eq!(
        post(port, &key1, "http://blog.localhost", r#"{"x":1}"#),
        403
    );
    let (status, body) = stats(port, &secret1);
    assert_eq!(
        (status, body["events"]["accepted"].clone()),
        (200, 2.into()),
        "{body}"
    );

    // Rotate: the new key is valid once nginx has read the file; the old one still is.
    let out = ok(&["rotate", "--file", f, "--site", "shop"]);
    let key2 = out[0].clone();
    assert!(is_key(&key2) && key2 != key1, "{out:?}");
    assert!(out[1].contains(&format!("/kc.js?key={key2}\"")), "{out:?}");
    assert_eq!(post(port, &key2, SHOP, r#"{"x":2}"#), 403, "not read yet");
    nginx.reload();
    accept(&key2, SHOP, r#"{"n":3}"#);
    accept(&key1, SHOP, r#"{"n":4}"#);

    // Retire the old key.
    let (code, _, err) = tool(&["retire", "--file", f, "--site", "shop", "--key", &blog[0]]);
    assert_eq!(code, 1, "another site's key: {err}");
    ok(&["retire", "--file", f, "--site", "shop", "--key", &key1]);
    nginx.reload();
    assert_eq!(post(port, &key1, SHOP, r#"{"x":3}"#), 403, "retired");
    accept(&key2, SHOP, r#"{"n":5}"#);

    // A new stats secret: the old one no longer opens the stats.
    let secret2 = ok(&["secret", "--file", f, "--site", "shop"])[0].clone();
    assert_ne!(secret2, secret1);
    nginx.reload();
    assert_eq!(stats(port, &secret1).0, 401);
    let (status, body) = stats(port, &secret2);
    assert_eq!(
        (status, body["site"].clone()),
        (200, "shop".into()),
        "{body}"
    );

    // What was accepted, and only that, in the site's topic, in order.
    let got: Vec<String> = consume(
        &brokers,
        "web-shop",
        sent.len() + 1,
        Duration::from_secs(10),
    )
    .iter()
    .map(|r| String::from_utf8_lossy(&r.value).into_owned())
    .collect();
    assert_eq!(got, sent);
    nginx.check_logs();
}

#[test]
fn bad_changes_are_refused_and_change_nothing() {
    let dir = TempDir::new("sites-tool-bad");
    let file = dir.0.join("sites.json");
    let f = file.to_str().unwrap();
    let key = ok(&[
        "add",
        "--file",
        f,
        "--id",
        "shop",
        "--domain",
        "shop.example",
    ])[0]
        .clone();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let before = std::fs::read(&file).unwrap();

    for (args, code, says) in [
        (
            vec!["add", "--file", f, "--domain", "*"],
            1,
            "may have \"*\" only as its first label",
        ),
        (
            vec!["add", "--file", f, "--domain", "*.localhost"],
            1,
            "localhost",
        ),
        (
            vec!["add", "--file", f, "--id", "shop", "--domain", "x.example"],
            1,
            "site \"shop\" exists",
        ),
        (
            vec![
                "add",
                "--file",
                f,
                "--id",
                "Bad Id",
                "--domain",
                "x.example",
            ],
            1,
            "site id",
        ),
        (
            vec!["add", "--file", f, "--domain", "x.example", "--rate", "0"],
            2,
            "--rate",
        ),
        (vec!["add", "--file", f], 2, "--domain is required"),
        (
            vec!["rotate", "--file", f, "--site", "nope"],
            1,
            "no site \"nope\"",
        ),
        (
            vec![
                "retire",
                "--file",
                f,
                "--site",
                "shop",
                "--key",
                key.as_str(),
            ],
            1,
            "only key",
        ),
        (
            vec!["add", "--domain", "x.example"],
            2,
            "--file is required",
        ),
        (vec!["frobnicate", "--file", f], 2, "unknown command"),
    ] {
        let (status, _, err) = tool(&args);
        assert_eq!(status, code, "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert_eq!(
            std::fs::read(&file).unwrap(),
            before,
            "{args:?} changed the file"
        );
    }
    // A change keeps the file's mode, and leaves no temporary file behind.
    ok(&["rotate", "--file", f, "--site", "shop"]);
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let names: Vec<_> = std::fs::read_dir(&dir.0)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("sites.json")]);
}

/// `kafka-sites check` refuses what `nginx -t` refuses, with the same words.
#[test]
fn check_agrees_with_nginx_t() {
    let dir = TempDir::new("sites-tool-check");
    let cases = [
        (
            r#"{"sites":[{"id":"x","keys":["short"],"domains":["a.example"]}]}"#,
            "is not 32 lowercase hexadecimal digits",
        ),
        (
            r#"{"sites":[{"id":"x","keys":["0123456789abcdef0123456789abcdef"],"domain":["a.example"]}]}"#,
            "unknown field `domain`",
        ),
        (
            r#"{"sites":[{"id":"x","keys":["0123456789abcdef0123456789abcdef"],"domains":["a.*.example"]}]}"#,
            "only as its first label",
        ),
        (r#"{"sites": ["#, "EOF"),
    ];
    for (i, (text, says)) in cases.iter().enumerate() {
        let file = dir.0.join(format!("s{i}.json"));
        std::fs::write(&file, text).unwrap();
        let (code, _, err) = tool(&["check", "--file", file.to_str().unwrap()]);
        assert_eq!(code, 1, "{text}");
        assert!(err.contains(says), "{err}");
        let (nginx_ok, nginx_says) = config_test(&conf_with(
            &format!("kafka_sites {};", file.display()),
            "location = /collect { kafka_collect; kafka_topic t; }",
        ));
        assert!(!nginx_ok, "{text}");
        // The tool's message is "kafka-sites: FILE: ERROR"; nginx's line names the same ERROR.
        let error = err
            .trim()
            .rsplit_once(": ")
            .map(|(_, e)| e)
            .unwrap_or_default();
        let error = err
            .trim()
            .split_once(&format!("{}: ", file.display()))
            .map(|(_, e)| e)
            .unwrap_or(error);
        assert!(
            nginx_says.contains(error),
            "tool: {err}\nnginx: {nginx_says}"
        );
    }
    let good = dir.0.join("good.json");
    let (code, _, _) = tool(&[
        "add",
        "--file",
        good.to_str().unwrap(),
        "--domain",
        "a.example",
    ]);
    assert_eq!(code, 0);
    assert_eq!(ok(&["check", "--file", good.to_str().unwrap()]).len(), 1);
}
