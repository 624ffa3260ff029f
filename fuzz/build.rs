//! `src/properties.rs` calls librdkafka, so it cannot be compiled here as a whole; this
//! copies out the one pure function that is fuzzed, `is_broker_address`. If it moves, change
//! `SOURCE` (the other paths are in `src/lib.rs`).

use std::{env, fs, path::Path};

const SOURCE: &str = "../src/properties.rs";
const FUNCTION: &str = "pub fn is_broker_address(";

fn main() {
    println!("cargo:rerun-if-changed={SOURCE}");
    let text = fs::read_to_string(SOURCE).unwrap_or_default();
    let code = match extract(&text) {
        Some(code) => code.to_string(),
        None => {
            println!(
                "cargo:warning=fuzz: `{FUNCTION}` not found in {SOURCE}; update fuzz/build.rs"
            );
            // The broker_address target then fails on its first input; the others still run.
            "pub fn is_broker_address(_: &str) -> bool {\n    \
             panic!(\"is_broker_address not found in src/properties.rs: update fuzz/build.rs\")\n}\n"
                .to_string()
        }
    };
    let out = Path::new(&env::var("OUT_DIR").unwrap()).join("is_broker_address.rs");
    fs::write(out, code).unwrap();
}

/// The function with its doc comment, up to its closing brace (braces inside char and string
/// literals skipped).
fn extract(text: &str) -> Option<&str> {
    let start = text.find(FUNCTION)?;
    let start = text[..start]
        .lines()
        .rev()
        .take_while(|l| l.trim_start().starts_with("///"))
        .map(|l| l.len() + 1)
        .fold(start, |s, n| s - n);
    let bytes = text.as_bytes();
    let (mut depth, mut i) = (0usize, text[start..].find('{')? + start);
    while i < bytes.len() {
        match bytes[i] {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(&text[start..=i]);
                }
            }
            b'\'' if bytes.get(i + 2) == Some(&b'\'') => i += 2,
            b'\'' if bytes.get(i + 1) == Some(&b'\\') => i += 3,
            b'"' => {
                i += 1;
                while bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}
