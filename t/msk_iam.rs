//! The MSK IAM auth token, byte for byte what AWS's reference signer
//! (aws-msk-iam-sasl-signer-python, t/msk_iam/reference.py) makes for the same credentials,
//! region and instant, but for the signer's own User-Agent query parameter, which names
//! each signer and is not signed.

mod common;

use std::process::Command;

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
