//! log_escape: the exact bytes come back, and the escaped text is safe on one log line.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nginx_kafka_fuzz::escape::{log_escape, log_unescape};

fuzz_target!(|data: &[u8]| {
    let mut escaped = Vec::new();
    log_escape(data, &mut escaped);

    assert_eq!(log_unescape(&escaped).as_deref(), Some(data), "round trip");
    assert!(
        std::str::from_utf8(&escaped).is_ok(),
        "escaped text is UTF-8"
    );
    assert!(
        !escaped.iter().any(|&b| b < 0x20 || b == 0x7f),
        "no raw control bytes or DEL"
    );

    // Every `"` is escaped: walking escape by escape, a bare quote never appears.
    let mut i = 0;
    while i < escaped.len() {
        match escaped[i] {
            b'\\' => {
                let next = escaped.get(i + 1).copied();
                assert!(matches!(next, Some(b'"' | b'\\' | b'x')), "dangling escape");
                i += if next == Some(b'x') { 4 } else { 2 };
            }
            b'"' => panic!("unescaped quote at {i}"),
            _ => i += 1,
        }
    }

    // Valid UTF-8 text stays readable: only `"`, `\` and control bytes change.
    if let Ok(text) = std::str::from_utf8(data) {
        if !text
            .bytes()
            .any(|b| b < 0x20 || b == 0x7f || b == b'"' || b == b'\\')
        {
            assert_eq!(escaped, data, "plain text is left as it is");
        }
    }
});
