//! MSK IAM: the auth token, byte for byte what AWS's reference signer
//! (aws-msk-iam-sasl-signer-python, t/msk_iam/reference.py) makes for the same credentials,
//! region and instant, but for the signer's own User-Agent query parameter, which names
//! each signer and is not signed; and `kafka_msk_iam` in nginx, its credentials from fake
//! AWS endpoints on 127.0.0.1 (STS, the instance metadata service) that answer only when
//! the test says so. No broker here speaks MSK's IAM authentication: what librdkafka does
//! with the token on the wire is not shown; readiness, refusals, the refresh and the log are.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::*;

fn decode(token: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    assert!(!token.contains('='), "no padding: {token}");
    let (mut bits, mut n, mut out) = (0u32, 0, Vec::new());
    for c in token.bytes() {
        let v = ALPHABET.iter().position(|&a| a == c).expect("base64url") as u32;
        bits = bits << 6 | v;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    String::from_utf8(out).unwrap()
}

/// (token, expiry) from a command's two lines.
fn run(command: &mut Command) -> (String, String) {
    let out = command.output().expect("runs");
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    (
        lines.next().unwrap().to_string(),
        lines.next().unwrap().to_string(),
    )
}

/// The signed URL without its `&User-Agent=...` (the last parameter).
fn without_agent(url: &str) -> (&str, &str) {
    url.rsplit_once("&User-Agent=")
        .expect("a User-Agent parameter")
}

#[test]
fn tokens_equal_the_reference_signers() {
    let cases = [
        (
            "us-east-1",
            "20261124T024619Z",
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            Some("IQoJb3JpZ2luX2VjE/x+y="),
        ),
        (
            "eu-west-1",
            "20260101T000000Z",
            "AKIAIOSFODNN7EXAMPLE",
            "je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY",
            None,
        ),
        (
            "ap-southeast-2",
            "20241231T235959Z",
            "ASIAXXXXXXXXXXXXXXXX",
            "s3cr3t with spaces & symbols ~!*'()",
            Some(&*"FwoGZXIvYXdzE".repeat(40)),
        ),
    ];
    for (region, time, key, secret, session) in cases {
        let env = |c: &mut Command| {
            c.env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .env("HOME", std::env::var("HOME").unwrap_or_default())
                .env("AWS_ACCESS_KEY_ID", key)
                .env("AWS_SECRET_ACCESS_KEY", secret)
                // No profile, metadata service or region lookups for the reference.
                .env("AWS_CONFIG_FILE", "/dev/null")
                .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
                .env("AWS_EC2_METADATA_DISABLED", "true");
            if let Some(t) = session {
                c.env("AWS_SESSION_TOKEN", t);
            }
        };
        let mut reference = Command::new("python3");
        reference
            .arg(repo().join("t/msk_iam/reference.py"))
            .args([region, time]);
        env(&mut reference);
        let (ref_token, ref_expiry) = run(&mut reference);
        let mut ours = Command::new(repo().join("build/bin/kafka-msk-token"));
        ours.args(["--region", region, "--time", time]);
        env(&mut ours);
        let (token, expiry) = run(&mut ours);

        let ref_url = decode(&ref_token);
        let url = decode(&token);
        let (ref_signed, ref_ua) = without_agent(&ref_url);
        let (signed, ua) = without_agent(&url);
        assert_eq!(signed, ref_signed, "{region} {time}");
        assert!(
            ref_ua.starts_with("aws-msk-iam-sasl-signer-python%2F"),
            "{ref_ua}"
        );
        assert!(ua.starts_with("nginx-kafka%2F"), "{ua}");
        assert_eq!(expiry, ref_expiry);
        assert!(signed.contains(&format!("X-Amz-Date={time}&")), "{signed}");
        assert_eq!(signed.contains("X-Amz-Security-Token="), session.is_some());
        println!(
            "{region} {time}: {}",
            signed.rsplit_once("X-Amz-Signature=").unwrap().1
        );
    }
}

/// An HTTP endpoint on 127.0.0.1 that hands each request (head and body) to the test and
/// answers what the test replies, whenever it replies.
struct FakeAws {
    port: u16,
    requests: mpsc::Receiver<String>,
    replies: mpsc::Sender<(u16, String)>,
}

trait Io: Read + Write {}
impl<T: Read + Write> Io for T {}

impl FakeAws {
    fn start() -> FakeAws {
        Self::serve(None)
    }

    /// Over TLS, with this certificate and key (PEM).
    fn start_tls(cert: &[u8], key: &[u8]) -> FakeAws {
        let identity = native_tls::Identity::from_pkcs8(cert, key).unwrap();
        Self::serve(Some(native_tls::TlsAcceptor::new(identity).unwrap()))
    }

    fn serve(tls: Option<native_tls::TlsAcceptor>) -> FakeAws {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (req_tx, requests) = mpsc::channel();
        let (replies, rep_rx) = mpsc::channel::<(u16, String)>();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let mut stream: Box<dyn Io> = match &tls {
                    None => Box::new(stream),
                    // A client that refuses the certificate ends the handshake: the next one.
                    Some(acceptor) => match acceptor.accept(stream) {
                        Ok(s) => Box::new(s),
                        Err(_) => continue,
                    },
                };
                let mut raw = Vec::new();
                let mut buf = [0u8; 4096];
                let head_end = loop {
                    if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break 0,
                        Ok(n) => raw.extend_from_slice(&buf[..n]),
                    }
                };
                if head_end == 0 {
                    continue;
                }
                let head = String::from_utf8_lossy(&raw[..head_end]).to_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().unwrap());
                while raw.len() < head_end + length {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => raw.extend_from_slice(&buf[..n]),
                    }
                }
                if req_tx
                    .send(String::from_utf8_lossy(&raw).into_owned())
                    .is_err()
                {
                    return;
                }
                let Ok((status, body)) = rep_rx.recv() else {
                    return;
                };
                let answer = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes());
            }
        });
        FakeAws {
            port,
            requests,
            replies,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The next request, which waits for `reply`.
    fn next(&self, within: Duration) -> String {
        self.requests
            .recv_timeout(within)
            .expect("a request to the fake endpoint")
    }

    fn reply(&self, status: u16, body: &str) {
        self.replies.send((status, body.to_string())).unwrap();
    }
}

/// `date -u` of `secs` from now, as AWS writes times.
fn iso_in(secs: u64) -> String {
    let out = Command::new("date")
        .args([
            "-u",
            "-d",
            &format!("+{secs} seconds"),
            "+%Y-%m-%dT%H:%M:%SZ",
        ])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

const ROLE: &str = "arn:aws:iam::123456789012:role/collector";
const SECRET: &str = "fake/secret+access+key";
const SESSION: &str = "fake-session-token-FwoGZXIvYXdzE";

fn sts_credentials(expires_in: u64) -> String {
    format!(
        "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\
         <AssumeRoleWithWebIdentityResult><Credentials><AccessKeyId>ASIAFAKEKEYID</AccessKeyId>\
         <SecretAccessKey>{SECRET}</SecretAccessKey><SessionToken>{SESSION}</SessionToken>\
         <Expiration>{}</Expiration></Credentials></AssumeRoleWithWebIdentityResult>\
         </AssumeRoleWithWebIdentityResponse>",
        iso_in(expires_in)
    )
}

/// The collector with `kafka_msk_iam`. No broker listens at `brokers`: there is none here
/// that MSK IAM tokens could open.
fn iam_collector(env: &[(&str, &str)]) -> Nginx {
    let conf = conf_with(
        "kafka_msk_iam eu-west-1;\n\
         kafka_option security.protocol sasl_plaintext;\n\
         kafka_option message.timeout.ms 2000;",
        "location = /in { kafka_ingest; kafka_topic iam-t; }\n \
         location = /ready { kafka_ready; }",
    );
    Nginx::start_conf_env(&conf, &format!("127.0.0.1:{}", free_port()), env)
}

fn ready_body(port: u16) -> (u16, String) {
    let r = Http::connect(port).request("GET", "/ready", &[], b"");
    (r.status, r.text())
}

fn token_lines(log: &str) -> usize {
    log.matches("kafka_msk_iam: a token from").count()
}

#[test]
fn web_identity_token_fetched_and_refreshed_off_the_event_loop() {
    let sts = FakeAws::start();
    let dir = TempDir::new("irsa");
    let token_file = dir.0.join("token");
    std::fs::write(&token_file, "web-identity-token-1\n").unwrap();
    let file = token_file.to_string_lossy().into_owned();
    let endpoint = sts.url();
    let mut nginx = iam_collector(&[
        ("AWS_WEB_IDENTITY_TOKEN_FILE", &file),
        ("AWS_ROLE_ARN", ROLE),
        ("AWS_ROLE_SESSION_NAME", "pod-a"),
        ("AWS_ENDPOINT_URL_STS", &endpoint),
    ]);

    // The worker's first STS call waits for the test: nginx answers meanwhile.
    let first = sts.next(Duration::from_secs(10));
    assert!(first.starts_with("POST / HTTP/1.1\r\n"), "{first}");
    for part in [
        "Action=AssumeRoleWithWebIdentity",
        "RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fcollector",
        "RoleSessionName=pod-a",
        "WebIdentityToken=web-identity-token-1",
    ] {
        assert!(first.contains(part), "{part} in {first}");
    }
    for _ in 0..10 {
        let (status, body) = ready_body(nginx.port);
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("\"no_token\""), "{body}");
        let r = post(nginx.port, "/in", "iam-t", b"{\"n\":1}");
        assert_eq!(r.status, 503, "{}", r.text());
        assert!(r.header("retry-after").is_some(), "{:?}", r.headers);
        assert!(
            r.text().contains("\"error\":\"unavailable\""),
            "{}",
            r.text()
        );
    }

    // The credentials come (valid for 8 s): the worker has a token, so it is no longer
    // refused for want of one (no broker listens: it is not ready either, for that reason).
    sts.reply(200, &sts_credentials(8));
    poll_until("the token", Duration::from_secs(10), || {
        token_lines(&nginx.logs()) == 1
    });
    let log = nginx.logs();
    assert!(
        log.contains(&format!(
            "kafka_msk_iam: a token from web identity (role \"{ROLE}\"), valid until 20"
        )),
        "{log}"
    );
    let (status, body) = ready_body(nginx.port);
    assert_eq!(status, 503);
    assert!(!body.contains("no_token"), "{body}");
    let r = post(nginx.port, "/in", "iam-t", b"{\"n\":2}");
    assert_eq!(r.status, 204, "{}", r.text());

    // Before the token expires, the thread asks again, with the token file as the kubelet
    // rotated it. STS refuses: the failure is logged with STS's reason, and once the
    // token has expired the worker is not ready and refuses events.
    std::fs::write(&token_file, "web-identity-token-2\n").unwrap();
    let second = sts.next(Duration::from_secs(15));
    assert!(
        second.contains("WebIdentityToken=web-identity-token-2"),
        "{second}"
    );
    sts.reply(
        403,
        "<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code>\
         <Message>Not authorized to perform sts:AssumeRoleWithWebIdentity</Message></Error>\
         </ErrorResponse>",
    );
    poll_until("no_token after the expiry", Duration::from_secs(15), || {
        ready_body(nginx.port).1.contains("AccessDenied")
    });
    let (status, body) = ready_body(nginx.port);
    assert_eq!(status, 503);
    assert!(body.contains("\"no_token\""), "{body}");
    let r = post(nginx.port, "/in", "iam-t", b"{\"n\":3}");
    assert_eq!(r.status, 503, "{}", r.text());
    let log = nginx.logs();
    assert!(
        log.contains(&format!(
            "kafka_msk_iam: STS AssumeRoleWithWebIdentity for \"{ROLE}\" answered 403 \
             AccessDenied: Not authorized to perform sts:AssumeRoleWithWebIdentity"
        )),
        "{log}"
    );

    // The thread tries again (after a back-off) and gets a token again.
    let third = sts.next(Duration::from_secs(15));
    assert!(
        third.contains("WebIdentityToken=web-identity-token-2"),
        "{third}"
    );
    sts.reply(200, &sts_credentials(600));
    poll_until("a token again", Duration::from_secs(10), || {
        token_lines(&nginx.logs()) == 2
    });
    let r = post(nginx.port, "/in", "iam-t", b"{\"n\":4}");
    assert_eq!(r.status, 204, "{}", r.text());

    let log = nginx.logs();
    for secret in [SECRET, SESSION, "web-identity-token"] {
        assert!(!log.contains(secret), "{secret} is never logged");
    }
    nginx
        .allowed_marks
        .push("Failed to acquire SASL OAUTHBEARER token".into());
    nginx.quit();
}

#[test]
fn instance_metadata_and_environment_credentials() {
    let imds = FakeAws::start();
    let endpoint = imds.url();
    let mut nginx = iam_collector(&[("AWS_EC2_METADATA_SERVICE_ENDPOINT", &endpoint)]);
    let put = imds.next(Duration::from_secs(10));
    assert!(
        put.starts_with("PUT /latest/api/token HTTP/1.1\r\n"),
        "{put}"
    );
    assert!(
        put.to_lowercase()
            .contains("x-aws-ec2-metadata-token-ttl-seconds: 21600"),
        "{put}"
    );
    imds.reply(200, "imds-session-token");
    let list = imds.next(Duration::from_secs(10));
    assert!(
        list.starts_with("GET /latest/meta-data/iam/security-credentials/ HTTP/1.1\r\n"),
        "{list}"
    );
    assert!(
        list.to_lowercase()
            .contains("x-aws-ec2-metadata-token: imds-session-token"),
        "{list}"
    );
    imds.reply(200, "node-role\n");
    let creds = imds.next(Duration::from_secs(10));
    assert!(
        creds.starts_with("GET /latest/meta-data/iam/security-credentials/node-role "),
        "{creds}"
    );
    imds.reply(
        200,
        &format!(
            "{{\"Code\":\"Success\",\"Type\":\"AWS-HMAC\",\"AccessKeyId\":\"ASIAFAKE2\",\
             \"SecretAccessKey\":\"{SECRET}\",\"Token\":\"{SESSION}\",\"Expiration\":\"{}\"}}",
            iso_in(3600)
        ),
    );
    poll_until("the token", Duration::from_secs(10), || {
        token_lines(&nginx.logs()) == 1
    });
    assert!(nginx.logs().contains(
        "kafka_msk_iam: a token from the instance metadata service (role \"node-role\")"
    ));
    nginx.quit();

    // Keys in the environment need no endpoint.
    let mut nginx = iam_collector(&[
        ("AWS_ACCESS_KEY_ID", "AKIAFAKEKEY"),
        ("AWS_SECRET_ACCESS_KEY", SECRET),
    ]);
    poll_until("the token", Duration::from_secs(10), || {
        token_lines(&nginx.logs()) == 1
    });
    assert!(nginx
        .logs()
        .contains("kafka_msk_iam: a token from the environment, valid until"));
    let (_, body) = ready_body(nginx.port);
    assert!(!body.contains("no_token"), "{body}");
    assert!(!nginx.logs().contains(SECRET));
    nginx.quit();
}

#[test]
fn nginx_t_checks_kafka_msk_iam() {
    let conf = |http: &str| conf_with(http, "location = /in { kafka_ingest; kafka_topic iam-t; }");
    let (ok, text) = config_test(&conf("kafka_msk_iam us-east-1;"));
    assert!(ok, "{text}");
    let cases = [
        (
            "kafka_msk_iam us_east_1;",
            "invalid AWS region \"us_east_1\" in \"kafka_msk_iam\" directive",
        ),
        (
            "kafka_msk_iam us-east-1;\nkafka_msk_iam eu-west-1;",
            "\"kafka_msk_iam\" directive is duplicate",
        ),
        (
            "kafka_msk_iam us-east-1;\nkafka_option sasl.mechanism SCRAM-SHA-512;",
            "\"kafka_msk_iam\" signs OAUTHBEARER tokens: \"sasl.mechanism\" cannot be \
             \"SCRAM-SHA-512\"",
        ),
        (
            "kafka_option security.protocol ssl;\nkafka_msk_iam us-east-1;",
            "\"kafka_msk_iam\" authenticates with SASL: \"security.protocol\" cannot be \"ssl\"",
        ),
        (
            "kafka_msk_iam us-east-1;\nkafka_option enable.sasl.oauthbearer.unsecure.jwt true;",
            "\"kafka_msk_iam\" makes the tokens: \"enable.sasl.oauthbearer.unsecure.jwt\" \
             cannot be set",
        ),
    ];
    for (http, want) in cases {
        let (ok, text) = config_test(&conf(http));
        assert!(!ok, "{http}: {text}");
        assert!(
            text.contains("[emerg]") && text.contains(want),
            "{http}: {text}"
        );
    }
}

#[test]
fn sts_over_https_checked_against_the_trusted_cas() {
    let certs = TempDir::new("sts-certs");
    test_certificates(&certs.0);
    let read = |name: &str| std::fs::read(certs.0.join(name)).unwrap();
    let sts = FakeAws::start_tls(&read("server.pem"), &read("server.key"));
    let dir = TempDir::new("irsa-tls");
    let token_file = dir.0.join("token");
    std::fs::write(&token_file, "web-identity-token-tls").unwrap();
    let file = token_file.to_string_lossy().into_owned();
    let endpoint = format!("https://localhost:{}", sts.port);
    let env = [
        ("AWS_WEB_IDENTITY_TOKEN_FILE", file.as_str()),
        ("AWS_ROLE_ARN", ROLE),
        ("AWS_ENDPOINT_URL_STS", endpoint.as_str()),
    ];
    // Workers see only the environment `env` lets through: OpenSSL's trusted CAs.
    let start = |ca: &str| {
        let conf = format!(
            "env SSL_CERT_FILE={};\n{}",
            certs.0.join(ca).display(),
            conf_with(
                "kafka_msk_iam eu-west-1;\n\
                 kafka_option security.protocol sasl_plaintext;",
                "location = /ready { kafka_ready; }\n \
                 location = /in { kafka_ingest; kafka_topic iam-t; }",
            )
        );
        Nginx::start_conf_env(&conf, &format!("127.0.0.1:{}", free_port()), &env)
    };

    // Another CA: the handshake fails, the reason is logged, no request reaches STS.
    let mut nginx = start("other-ca.pem");
    poll_until("the refusal", Duration::from_secs(15), || {
        nginx
            .logs()
            .contains("Failed to acquire SASL OAUTHBEARER token")
    });
    let log = nginx.logs();
    assert!(log.contains("certificate verify failed"), "{log}");
    assert!(ready_body(nginx.port).1.contains("\"no_token\""));
    assert!(sts.requests.try_recv().is_err(), "STS was reached");
    nginx
        .allowed_marks
        .push("Failed to acquire SASL OAUTHBEARER token".into());
    nginx.quit();

    // The CA that signed it: the token comes.
    let mut nginx = start("ca.pem");
    let request = sts.next(Duration::from_secs(15));
    assert!(
        request.contains("WebIdentityToken=web-identity-token-tls"),
        "{request}"
    );
    sts.reply(200, &sts_credentials(3600));
    poll_until("the token", Duration::from_secs(10), || {
        token_lines(&nginx.logs()) == 1
    });
    assert!(!ready_body(nginx.port).1.contains("no_token"));
    nginx.quit();
}
