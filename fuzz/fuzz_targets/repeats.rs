//! RepeatFilter: no line is lost. Every admitted line is either written or counted, and every
//! count is reported once: by a later `Write { suppressed }` or by `expire`. At most 256
//! kinds of line are held, whatever the lines.
#![no_main]

use libfuzzer_sys::{arbitrary, fuzz_target};
use nginx_kafka_fuzz::repeats::{key_of, RepeatFilter, Verdict};

#[derive(Debug, arbitrary::Arbitrary)]
enum Line {
    /// A line as librdkafka might write it.
    Text(String),
    /// One of many distinct lines (letters only, so digits cannot merge them).
    Nth(u16),
}

#[derive(Debug, arbitrary::Arbitrary)]
enum Op {
    Admit { line: Line, after_ms: u16 },
    Expire { after_ms: u16 },
}

#[derive(Debug, arbitrary::Arbitrary)]
struct Run {
    window_ms: u16,
    ops: Vec<Op>,
}

fn nth(n: u16) -> String {
    let mut s = String::from("broker ");
    let mut n = u32::from(n) + 1;
    while n > 0 {
        s.push(char::from(b'a' + (n % 26) as u8));
        n /= 26;
    }
    s
}

fuzz_target!(|run: Run| {
    let window = u64::from(run.window_ms);
    let mut filter = RepeatFilter::new(window);
    let mut now = 0u64;
    let (mut lines, mut written, mut reported) = (0u64, 0u64, 0u64);
    let mut last_written = std::collections::HashMap::new();
    let mut keys = std::collections::HashSet::new();

    for op in run.ops {
        match op {
            Op::Admit { line, after_ms } => {
                now += u64::from(after_ms);
                let text = match line {
                    Line::Text(s) => s,
                    Line::Nth(n) => nth(n),
                };
                lines += 1;
                let key = key_of(&text);
                keys.insert(key.clone());
                assert!(!key.bytes().any(|b| b.is_ascii_digit()));
                match filter.admit(&text, now) {
                    Verdict::Write { suppressed } => {
                        written += 1;
                        reported += suppressed;
                        if let Some(&at) = last_written.get(&key) {
                            assert!(now - at >= window || suppressed == 0);
                        }
                        last_written.insert(key, now);
                    }
                    Verdict::Suppress => match last_written.get(&key) {
                        // Held back within a window of the last time it was written...
                        Some(&at) if now - at < window => {}
                        // ...or a new kind while MAX_KEYS (256) kinds are being counted.
                        _ => assert!(keys.len() > 256, "suppressed a new kind: {key:?}"),
                    },
                }
            }
            Op::Expire { after_ms } => {
                now += u64::from(after_ms);
                reported += filter.expire(now).iter().map(|(_, n)| n).sum::<u64>();
            }
        }
    }
    // Memory is bounded whatever the lines are (the filter's state, seen through its Debug).
    if !keys.iter().any(|k| k.contains("Seen")) {
        assert!(format!("{filter:?}").matches("Seen {").count() <= 256);
    }
    reported += filter
        .expire(now + window)
        .iter()
        .map(|(_, n)| n)
        .sum::<u64>();
    assert_eq!(lines, written + reported, "every line written or counted");
});
