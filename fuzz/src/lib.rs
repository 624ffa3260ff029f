//! The module's pure logic, compiled straight from `../src` so that fuzzing never builds
//! nginx or librdkafka. If those files move, update the paths here (and `SOURCE` in
//! `build.rs` for `is_broker_address`).

#[path = "../../src/escape.rs"]
pub mod escape;

#[path = "../../src/record.rs"]
pub mod record;

#[path = "../../src/failure_line.rs"]
pub mod failure_line;

#[path = "../../src/repeats.rs"]
pub mod repeats;

#[path = "../../src/metrics/mod.rs"]
pub mod metrics;

/// `src/properties.rs` needs librdkafka; only `is_broker_address` is copied out (build.rs).
pub mod properties {
    include!(concat!(env!("OUT_DIR"), "/is_broker_address.rs"));
}

/// Known issues (fuzz/regressions/) are skipped so that a run goes on looking for new ones;
/// `NGINX_KAFKA_FUZZ_STRICT=1` (as `scripts/fuzz.sh regressions` sets it) checks them too.
pub fn strict() -> bool {
    static STRICT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *STRICT.get_or_init(|| std::env::var_os("NGINX_KAFKA_FUZZ_STRICT").is_some_and(|v| v == "1"))
}
