//! The events of a `kafka_collect` request: a POST body (one JSON object, a JSON array of
//! objects, or NDJSON: one object per line) or a pixel's query string.
//!
//! Each event's value is its bytes as sent: the array element or the line, exactly
//! (serde_json's `RawValue` borrows it from the body). The format is told from the body, not
//! from the content type: `sendBeacon` sends `text/plain`.

use serde_json::value::RawValue;

/// Limits of one request.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_event: usize,
    pub max_events: usize,
}

/// Why a body was refused whole.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyError {
    /// Not JSON at all (nor NDJSON), or not UTF-8.
    Malformed,
    /// Events that are not JSON objects, or malformed lines: their indices, in order.
    Invalid(Vec<usize>),
    /// Events larger than `max_event`: their indices.
    TooLarge(Vec<usize>),
    /// More events than `max_events`.
    TooMany(usize),
    Empty,
}

/// The events of a body, in order; any bad event refuses the whole body.
pub fn parse(body: &[u8], limits: Limits) -> Result<Vec<&[u8]>, BodyError> {
    let text = std::str::from_utf8(body).map_err(|_| BodyError::Malformed)?;
    let trimmed = text.trim_start_matches(['\u{feff}', ' ', '\t', '\r', '\n']);
    if trimmed.trim_end().is_empty() {
        return Err(BodyError::Empty);
    }
    let events: Vec<&str> = if trimmed.starts_with('[') {
        let list: Vec<&RawValue> =
            serde_json::from_str(trimmed).map_err(|_| BodyError::Malformed)?;
        list.into_iter().map(RawValue::get).collect()
    } else {
        match serde_json::from_str::<&RawValue>(trimmed) {
            // One object, however it is laid out over lines.
            Ok(one) => vec![one.get()],
            Err(_) => lines(trimmed)?,
        }
    };
    if events.is_empty() {
        return Err(BodyError::Empty);
    }
    if events.len() > limits.max_events {
        return Err(BodyError::TooMany(events.len()));
    }
    let bad: Vec<usize> = (0..events.len())
        .filter(|&i| !events[i].starts_with('{'))
        .collect();
    if !bad.is_empty() {
        return Err(BodyError::Invalid(bad));
    }
    let large: Vec<usize> = (0..events.len())
        .filter(|&i| events[i].len() > limits.max_event)
        .collect();
    if !large.is_empty() {
        return Err(BodyError::TooLarge(large));
    }
    Ok(events.into_iter().map(str::as_bytes).collect())
}

/// NDJSON: one JSON value per non-blank line.
fn lines(text: &str) -> Result<Vec<&str>, BodyError> {
    let mut events = Vec::new();
    let mut bad = Vec::new();
    for line in text.split('\n') {
        let line = line.trim_matches([' ', '\t', '\r']);
        if line.is_empty() {
            continue;
        }
        match serde_json::from_str::<&RawValue>(line) {
            Ok(v) => events.push(v.get()),
            Err(_) => {
                bad.push(events.len() + bad.len());
            }
        }
    }
    if !bad.is_empty() {
        // Not one good line: not NDJSON either.
        if events.is_empty() {
            return Err(BodyError::Malformed);
        }
        return Err(BodyError::Invalid(bad));
    }
    Ok(events)
}

/// The event of a pixel request: every query argument but `key`, as a string field, in order
/// (an argument given twice keeps its first value).
pub fn from_query(query: &[u8]) -> Vec<u8> {
    let mut seen: Vec<String> = Vec::new();
    let mut out = String::from("{");
    for pair in query.split(|&b| b == b'&') {
        if pair.is_empty() {
            continue;
        }
        let (name, value) = match pair.iter().position(|&b| b == b'=') {
            Some(eq) => (&pair[..eq], &pair[eq + 1..]),
            None => (pair, &b""[..]),
        };
        let name = decode(name);
        if name.is_empty() || name == "key" || seen.contains(&name) {
            continue;
        }
        if !seen.is_empty() {
            out.push(',');
        }
        // Strings serialise infallibly.
        out += &serde_json::to_string(&name).unwrap_or_default();
        out.push(':');
        out += &serde_json::to_string(&decode(value)).unwrap_or_default();
        seen.push(name);
    }
    out.push('}');
    out.into_bytes()
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a byte; invalid
/// UTF-8 is replaced.
fn decode(s: &[u8]) -> String {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < s.len() && hex(s[i + 1]).is_some() && hex(s[i + 2]).is_some() => {
                out.push(hex(s[i + 1]).unwrap_or(0) << 4 | hex(s[i + 2]).unwrap_or(0));
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// The message key a site's `key_field` gives an event: the field's string (unescaped) or
/// number (as written); `None` when the event has no such field, or another kind of value.
pub fn key_field(event: &[u8], field: &str) -> Option<Vec<u8>> {
    let map: std::collections::HashMap<std::borrow::Cow<'_, str>, &RawValue> =
        serde_json::from_slice(event).ok()?;
    let raw = map.get(field)?.get();
    if raw.starts_with('"') {
        let s: String = serde_json::from_str(raw).ok()?;
        Some(s.into_bytes())
    } else if raw.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
        Some(raw.as_bytes().to_vec())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Limits = Limits {
        max_event: 64,
        max_events: 3,
    };

    fn ok(body: &str) -> Vec<&str> {
        parse(body.as_bytes(), L)
            .unwrap()
            .into_iter()
            .map(|e| std::str::from_utf8(e).unwrap())
            .collect()
    }

    #[test]
    fn one_object_an_array_and_ndjson() {
        assert_eq!(ok(r#"{"a":1}"#), [r#"{"a":1}"#]);
        assert_eq!(ok("  {\n \"a\" : 1\n}\n"), ["{\n \"a\" : 1\n}"]);
        assert_eq!(
            ok(r#"[{"a":1}, {"b":"x"} ,{"c":[1,2]}]"#),
            [r#"{"a":1}"#, r#"{"b":"x"}"#, r#"{"c":[1,2]}"#]
        );
        assert_eq!(
            ok("{\"a\":1}\n\n{\"b\":2}\r\n{\"c\":3}"),
            [r#"{"a":1}"#, r#"{"b":2}"#, r#"{"c":3}"#]
        );
        // The bytes as sent, escapes and spacing included.
        assert_eq!(ok(r#"[ {"u":"\u00e9 é"} ]"#), [r#"{"u":"\u00e9 é"}"#]);
    }

    #[test]
    fn bad_bodies_are_refused_whole_naming_the_events() {
        fn p(b: &str) -> Result<Vec<&[u8]>, BodyError> {
            parse(b.as_bytes(), L)
        }
        assert_eq!(p(""), Err(BodyError::Empty));
        assert_eq!(p(" \n"), Err(BodyError::Empty));
        assert_eq!(p("[]"), Err(BodyError::Empty));
        assert_eq!(p("[{\"a\":1},"), Err(BodyError::Malformed));
        assert_eq!(p("hello"), Err(BodyError::Malformed));
        assert_eq!(parse(b"{\"a\":\"\xff\"}", L), Err(BodyError::Malformed));
        assert_eq!(
            p(r#"[{"a":1}, 2, "x"]"#),
            Err(BodyError::Invalid(vec![1, 2]))
        );
        assert_eq!(
            p("{\"a\":1}\n{\"b\":\n{\"c\":3}"),
            Err(BodyError::Invalid(vec![1]))
        );
        assert_eq!(p("42"), Err(BodyError::Invalid(vec![0])));
        assert_eq!(
            p(r#"[{"a":1},{"a":1},{"a":1},{"a":1}]"#),
            Err(BodyError::TooMany(4))
        );
        let big = format!(r#"[{{"a":1}},{{"a":"{}"}}]"#, "x".repeat(64));
        assert_eq!(p(&big), Err(BodyError::TooLarge(vec![1])));
    }

    #[test]
    fn pixel_query_becomes_one_object() {
        let e = from_query(b"key=abc&type=pageview&url=https%3A%2F%2Fa.example%2F%3Fq%3D1&p.plan=pro+x&type=again&&empty");
        assert_eq!(
            std::str::from_utf8(&e).unwrap(),
            r#"{"type":"pageview","url":"https://a.example/?q=1","p.plan":"pro x","empty":""}"#
        );
        assert_eq!(from_query(b"key=abc"), b"{}");
        // A quote and a bad escape stay text.
        assert_eq!(from_query(b"a=%22%zz%4"), br#"{"a":"\"%zz%4"}"#);
    }

    #[test]
    fn key_field_of_an_event() {
        assert_eq!(
            key_field(br#"{"uid":"u\"1","n":2}"#, "uid"),
            Some(b"u\"1".to_vec())
        );
        assert_eq!(key_field(br#"{"uid":42}"#, "uid"), Some(b"42".to_vec()));
        assert_eq!(key_field(br#"{"uid":null}"#, "uid"), None);
        assert_eq!(key_field(br#"{"other":1}"#, "uid"), None);
        assert_eq!(key_field(b"[1]", "uid"), None);
    }
}
