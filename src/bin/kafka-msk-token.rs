//! Prints an Amazon MSK IAM auth token (SASL/OAUTHBEARER) for the credentials in the
//! environment, as the module signs it: for checking credentials and a cluster's policy by
//! hand, and for comparing with AWS's own signers.
//!
//! Usage: kafka-msk-token --region REGION [--time YYYYMMDDTHHMMSSZ] [--url]
//! Credentials: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN (optional).
//! Prints the token, then its expiry (milliseconds since the epoch); with --url, the signed
//! URL the token encodes instead of the token.

use std::process::ExitCode;

#[path = "../aws/sigv4.rs"]
mod sigv4;

const USAGE: &str = "usage: kafka-msk-token --region REGION [--time YYYYMMDDTHHMMSSZ] [--url]\n\
     credentials from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN";

fn main() -> ExitCode {
    let mut region = None;
    let mut time = None;
    let mut url = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--region" => region = args.next(),
            "--time" => time = args.next(),
            "--url" => url = true,
            _ => {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let Some(region) = region else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let now = match time {
        Some(t) => match sigv4::parse_amz_date(&t) {
            Some(secs) => secs,
            None => {
                eprintln!("kafka-msk-token: --time \"{t}\" is not YYYYMMDDTHHMMSSZ");
                return ExitCode::from(2);
            }
        },
        None => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    };
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let (Some(access_key_id), Some(secret_access_key)) =
        (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY"))
    else {
        eprintln!("kafka-msk-token: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are required");
        return ExitCode::from(1);
    };
    let creds = sigv4::Credentials {
        access_key_id,
        secret_access_key,
        session_token: var("AWS_SESSION_TOKEN"),
    };
    let agent = concat!("nginx-kafka/", env!("CARGO_PKG_VERSION"));
    let token = sigv4::msk_token(&region, &creds, now, agent);
    if url {
        let bytes = decode(&token.value);
        println!("{}", String::from_utf8_lossy(&bytes));
    } else {
        println!("{}", token.value);
    }
    println!("{}", token.expires_ms);
    ExitCode::SUCCESS
}

/// base64url without padding, back to bytes (the tool's own output only).
fn decode(s: &str) -> Vec<u8> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.bytes() {
        let Some(v) = ALPHABET.iter().position(|&a| a == c) else {
            continue;
        };
        bits = bits << 6 | v as u32;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    out
}
