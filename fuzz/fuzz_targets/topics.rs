//! Topic rules. Input: the topic on the first line, `kafka_allowed_topics` arguments on the
//! following lines (a newline can never be part of a legal topic or pattern).
#![no_main]

use libfuzzer_sys::fuzz_target;
use nginx_kafka_fuzz::record::{check_topic, is_legal_topic, TopicError, TopicPattern};

/// Kafka's rule, written out independently: 1..=249 bytes of [A-Za-z0-9._-], not "." or "..".
#[allow(clippy::manual_is_ascii_check)] // by hand on purpose, not as the code under test has it
fn reference_legal(name: &[u8]) -> bool {
    (1..=249).contains(&name.len())
        && name != b"."
        && name != b".."
        && name.iter().all(|b| {
            (b'a'..=b'z').contains(b)
                || (b'A'..=b'Z').contains(b)
                || (b'0'..=b'9').contains(b)
                || b".-_".contains(b)
        })
}

fuzz_target!(|data: &[u8]| {
    assert_eq!(is_legal_topic(data), reference_legal(data), "whole input");

    let mut lines = data.split(|&b| b == b'\n');
    let topic = lines.next().unwrap_or_default();
    assert_eq!(is_legal_topic(topic), reference_legal(topic));

    let mut patterns = Vec::new();
    for arg in lines {
        assert_eq!(is_legal_topic(arg), reference_legal(arg));
        let parsed = TopicPattern::parse(arg);
        match &parsed {
            Some(TopicPattern::Exact(name)) => {
                assert_eq!(name, arg);
                assert!(reference_legal(name));
                assert!(parsed.as_ref().unwrap().matches(name));
                // An exact pattern matches its name and nothing else.
                assert_eq!(parsed.as_ref().unwrap().matches(topic), topic == arg);
            }
            Some(TopicPattern::Prefix(prefix)) => {
                assert_eq!(arg, [&prefix[..], b"*"].concat());
                // A prefix is accepted only if some legal name starts with it.
                assert!(
                    prefix.is_empty()
                        || reference_legal(prefix)
                        || reference_legal(&[&prefix[..], b"a"].concat())
                );
                let p = parsed.as_ref().unwrap();
                assert_eq!(p.matches(topic), topic.starts_with(prefix));
                // Any legal name that starts with the prefix matches, the prefix itself included.
                if !prefix.is_empty() {
                    assert!(p.matches(prefix));
                }
                let longer = [&prefix[..], b"x"].concat();
                if reference_legal(&longer) {
                    assert!(p.matches(&longer));
                }
            }
            None => {
                // Rejected arguments can never match a legal topic: a prefix can when some
                // legal name starts with it (`.*` and `..*` can: `.a`, `..a`).
                let could_match = match arg.strip_suffix(b"*") {
                    Some(stem) => {
                        stem.is_empty()
                            || reference_legal(stem)
                            || reference_legal(&[stem, b"a"].concat())
                    }
                    None => reference_legal(arg),
                };
                assert!(!could_match, "legal pattern rejected: {arg:?}");
            }
        }
        patterns.extend(parsed);
    }

    let expected = if topic.is_empty() {
        Err(TopicError::Missing)
    } else if !reference_legal(topic) {
        Err(TopicError::Illegal)
    } else if !patterns.iter().any(|p| match p {
        TopicPattern::Exact(name) => name == topic,
        TopicPattern::Prefix(prefix) => topic.starts_with(prefix),
    }) {
        Err(TopicError::NotAllowed)
    } else {
        Ok(())
    };
    assert_eq!(check_topic(topic, Some(&patterns)), expected);
    let unrestricted = match expected {
        Err(TopicError::NotAllowed) => Ok(()),
        other => other,
    };
    assert_eq!(check_topic(topic, None), unrestricted);
});
