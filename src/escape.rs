//! Byte escaping: payloads written into the error log, and JSON strings as lua-cjson writes them.

/// Escapes `bytes` for one error-log line so that the original bytes can be recovered exactly:
/// `\"`, `\\`, and `\xHH` for control bytes, DEL and bytes that are not valid UTF-8. Valid
/// UTF-8 text stays readable.
pub fn log_escape(bytes: &[u8], out: &mut Vec<u8>) {
    out.reserve(bytes.len() + 8);
    for chunk in bytes.utf8_chunks() {
        for &b in chunk.valid().as_bytes() {
            match b {
                b'"' => out.extend_from_slice(b"\\\""),
                b'\\' => out.extend_from_slice(b"\\\\"),
                0x00..=0x1f | 0x7f => push_hex(b, out),
                _ => out.push(b),
            }
        }
        for &b in chunk.invalid() {
            push_hex(b, out);
        }
    }
}

/// Reverses [`log_escape`]. Returns `None` for a malformed escape.
pub fn log_unescape(text: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        if text[i] != b'\\' {
            out.push(text[i]);
            i += 1;
            continue;
        }
        match text.get(i + 1)? {
            b'"' => out.push(b'"'),
            b'\\' => out.push(b'\\'),
            b'x' => {
                let hex = text.get(i + 2..i + 4)?;
                // Two hex digits exactly: `from_str_radix` alone would also take `+f`.
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            _ => return None,
        }
        i += 2;
    }
    Some(out)
}

fn push_hex(b: u8, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.extend_from_slice(&[
        b'\\',
        b'x',
        HEX[usize::from(b >> 4)],
        HEX[usize::from(b & 15)],
    ]);
}

/// Appends `bytes` as a JSON string, quotes included, exactly as lua-cjson 2.1 encodes a Lua
/// string: `"`, `\` and `/` escaped, the usual short escapes, `\u00XX` for other control
/// bytes and DEL, every other byte as it is.
pub fn cjson_string(bytes: &[u8], out: &mut Vec<u8>) {
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    for &b in bytes {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'/' => out.extend_from_slice(b"\\/"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            0x00..=0x1f | 0x7f => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 15)]);
            }
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn esc(b: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        log_escape(b, &mut v);
        v
    }

    #[test]
    fn unescape_takes_two_hex_digits_only() {
        // Found by fuzzing (fuzz/regressions/log_unescape/).
        assert!(log_unescape(b"\\x+f").is_none());
        assert_eq!(log_unescape(b"\\x0f"), Some(vec![0x0f]));
    }

    #[test]
    fn log_escape_keeps_text_readable() {
        assert_eq!(esc(b"{\"a\":1}"), b"{\\\"a\\\":1}");
        assert_eq!(esc("事件 ok".as_bytes()), "事件 ok".as_bytes());
        assert_eq!(esc(b"a\nb\\c\x7f"), b"a\\x0ab\\\\c\\x7f");
        assert_eq!(esc(b"\xff\xfe"), b"\\xff\\xfe");
    }

    #[test]
    fn log_escape_round_trips_every_byte() {
        let all: Vec<u8> = (0..=255u8).chain(b"\"\\x41".iter().copied()).collect();
        assert_eq!(log_unescape(&esc(&all)).unwrap(), all);
        assert!(log_unescape(b"bad\\q").is_none());
        assert!(log_unescape(b"cut\\x4").is_none());
    }

    #[test]
    fn cjson_matches_lua_cjson() {
        let mut v = Vec::new();
        cjson_string(b"{\"url\":\"a/b\"}\n\t\x01\x7f\xe4\xba\x8b", &mut v);
        assert_eq!(
            v,
            b"\"{\\\"url\\\":\\\"a\\/b\\\"}\\n\\t\\u0001\\u007f\xe4\xba\x8b\""
        );
    }
}
