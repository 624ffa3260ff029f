//! What goes into Kafka: topic rules and the message value built from a request body.

use std::borrow::Cow;

use crate::escape::cjson_string;

/// How a request body becomes a message value (`kafka_value_format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueFormat {
    /// The body, byte for byte.
    Raw,
    /// `{"body_data":"<body>"}`, as the OpenResty collector's `cjson.encode` wrote it.
    BodyData,
}

impl ValueFormat {
    pub fn value<'a>(self, body: &'a [u8]) -> Cow<'a, [u8]> {
        match self {
            ValueFormat::Raw => Cow::Borrowed(body),
            ValueFormat::BodyData => {
                let mut out = Vec::with_capacity(body.len() + body.len() / 8 + 16);
                out.extend_from_slice(b"{\"body_data\":");
                cjson_string(body, &mut out);
                out.push(b'}');
                Cow::Owned(out)
            }
        }
    }
}

/// Kafka's own rule for topic names: 1 to 249 of `[A-Za-z0-9._-]`, and not `.` or `..`.
pub fn is_legal_topic(name: &[u8]) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != b"."
        && name != b".."
        && name.iter().all(|&b| is_topic_char(b))
}

fn is_topic_char(b: u8) -> bool {
    TOPIC_CHARS[b as usize]
}

/// `[A-Za-z0-9._-]`, as a table: one load per byte of every request's topic.
static TOPIC_CHARS: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || c == b'.' || c == b'_' || c == b'-';
        b += 1;
    }
    t
};

/// One entry of `kafka_allowed_topics`: an exact name, or a prefix ending in `*`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TopicPattern {
    Exact(Vec<u8>),
    Prefix(Vec<u8>),
}

impl TopicPattern {
    /// Parses one directive argument; `None` when it can never match a legal topic.
    pub fn parse(arg: &[u8]) -> Option<TopicPattern> {
        match arg.strip_suffix(b"*") {
            // A prefix need not be a topic itself (`.` is not, `.a` is): made of topic
            // characters, it matches itself or itself and one more.
            Some(prefix) if prefix.len() <= 249 && prefix.iter().all(|&b| is_topic_char(b)) => {
                Some(TopicPattern::Prefix(prefix.to_vec()))
            }
            Some(_) => None,
            None if is_legal_topic(arg) => Some(TopicPattern::Exact(arg.to_vec())),
            None => None,
        }
    }

    pub fn matches(&self, topic: &[u8]) -> bool {
        match self {
            TopicPattern::Exact(name) => name == topic,
            TopicPattern::Prefix(prefix) => topic.starts_with(prefix),
        }
    }
}

/// Why a request's topic cannot be used.
#[derive(Debug, PartialEq, Eq)]
pub enum TopicError {
    Missing,
    Illegal,
    NotAllowed,
}

/// Checks a topic evaluated for a request against Kafka's rules and the allowlist.
pub fn check_topic(topic: &[u8], allowed: Option<&[TopicPattern]>) -> Result<(), TopicError> {
    if topic.is_empty() {
        return Err(TopicError::Missing);
    }
    if !is_legal_topic(topic) {
        return Err(TopicError::Illegal);
    }
    match allowed {
        Some(patterns) if !patterns.iter().any(|p| p.matches(topic)) => Err(TopicError::NotAllowed),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_value_is_the_body() {
        assert_eq!(&*ValueFormat::Raw.value(b"{\"a\":1}"), b"{\"a\":1}");
    }

    #[test]
    fn body_data_value_wraps_like_the_lua_script() {
        assert_eq!(
            &*ValueFormat::BodyData.value(b"{\"page\":\"www.example.com/p.html\"}\n"),
            &b"{\"body_data\":\"{\\\"page\\\":\\\"www.example.com\\/p.html\\\"}\\n\"}"[..]
        );
    }

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(is_legal_topic(b"my-poc-topic-01"));
        assert!(is_legal_topic(b"a.b_c"));
        assert!(!is_legal_topic(b""));
        assert!(!is_legal_topic(b".."));
        assert!(!is_legal_topic(b"bad topic"));
        assert!(!is_legal_topic(b"x/y"));
        assert!(!is_legal_topic(&[b'a'; 250]));
    }

    #[test]
    fn allowlist_takes_names_and_prefixes() {
        let list = [
            TopicPattern::parse(b"events").unwrap(),
            TopicPattern::parse(b"site.*").unwrap(),
        ];
        assert_eq!(check_topic(b"events", Some(&list)), Ok(()));
        assert_eq!(check_topic(b"site.a1", Some(&list)), Ok(()));
        assert_eq!(
            check_topic(b"events2", Some(&list)),
            Err(TopicError::NotAllowed)
        );
        assert_eq!(check_topic(b"", Some(&list)), Err(TopicError::Missing));
        assert_eq!(check_topic(b"a b", None), Err(TopicError::Illegal));
        assert_eq!(check_topic(b"any", None), Ok(()));
        assert_eq!(
            TopicPattern::parse(b"*"),
            Some(TopicPattern::Prefix(vec![]))
        );
        assert_eq!(TopicPattern::parse(b"bad name"), None);
        // Found by fuzzing (fuzz/regressions/topics/): `.a` is a topic, so `.*` may match.
        assert_eq!(
            TopicPattern::parse(b".*"),
            Some(TopicPattern::Prefix(b".".to_vec()))
        );
        assert_eq!(
            TopicPattern::parse(b"..*"),
            Some(TopicPattern::Prefix(b"..".to_vec()))
        );
        assert_eq!(TopicPattern::parse(b"bad/*"), None);
    }
}
