//! log_unescape on anything: no panic, and what it accepts survives an escape round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nginx_kafka_fuzz::escape::{log_escape, log_unescape};

fuzz_target!(|data: &[u8]| {
    let Some(bytes) = log_unescape(data) else {
        return;
    };
    assert!(bytes.len() <= data.len(), "unescaping never grows");
    // Accepted `\x` escapes are two hex digits. Known: `\x+f` is taken as 0x0f, because
    // from_str_radix allows a sign (fuzz/regressions/log_unescape/).
    let mut i = 0;
    while i < data.len() {
        if data[i] != b'\\' {
            i += 1;
            continue;
        }
        if data[i + 1] == b'x' {
            let hex = &data[i + 2..i + 4];
            assert!(
                hex.iter().all(u8::is_ascii_hexdigit),
                "\\x{hex:?} accepted"
            );
            i += 2;
        }
        i += 2;
    }
    let mut escaped = Vec::new();
    log_escape(&bytes, &mut escaped);
    assert_eq!(log_unescape(&escaped), Some(bytes), "re-escaped round trip");
});
