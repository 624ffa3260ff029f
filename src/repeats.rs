//! Rate limiting for repeated log lines: while a broker is down librdkafka reports the same
//! trouble every second or so; the error log gets it once per window, with a count.

use std::collections::HashMap;

/// Lines that differ only in their digits (milliseconds, counts, ports) count as one.
pub fn key_of(message: &str) -> String {
    message.chars().filter(|c| !c.is_ascii_digit()).collect()
}

#[derive(Debug)]
struct Seen {
    since_ms: u64,
    suppressed: u64,
}

/// Admits a line once per `window_ms` per key and counts the rest.
#[derive(Debug)]
pub struct RepeatFilter {
    window_ms: u64,
    seen: HashMap<String, Seen>,
    /// Lines of new kinds held back because `MAX_KEYS` kinds were already being counted.
    overflow: u64,
}

/// What to do with a line.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Write it; `suppressed` similar lines were held back since it was last written.
    Write { suppressed: u64 },
    /// Count it and write nothing.
    Suppress,
}

const MAX_KEYS: usize = 256;

impl RepeatFilter {
    pub fn new(window_ms: u64) -> Self {
        RepeatFilter {
            window_ms,
            seen: HashMap::new(),
            overflow: 0,
        }
    }

    pub fn admit(&mut self, message: &str, now_ms: u64) -> Verdict {
        let key = key_of(message);
        if let Some(seen) = self.seen.get_mut(&key) {
            if now_ms.saturating_sub(seen.since_ms) < self.window_ms {
                seen.suppressed += 1;
                return Verdict::Suppress;
            }
            let suppressed = std::mem::take(&mut seen.suppressed);
            seen.since_ms = now_ms;
            return Verdict::Write { suppressed };
        }
        if self.seen.len() >= MAX_KEYS {
            let owed = self.expire(now_ms);
            self.overflow += owed.iter().map(|(_, n)| n).sum::<u64>();
            if self.seen.len() >= MAX_KEYS {
                // Bounded memory whatever clients send: count it, write nothing.
                self.overflow += 1;
                return Verdict::Suppress;
            }
        }
        self.seen.insert(
            key,
            Seen {
                since_ms: now_ms,
                suppressed: 0,
            },
        );
        Verdict::Write { suppressed: 0 }
    }

    /// Forgets keys whose window has passed, returning the counts still owed to the log
    /// (one example key and how many lines like it were held back).
    pub fn expire(&mut self, now_ms: u64) -> Vec<(String, u64)> {
        let window = self.window_ms;
        let mut owed = Vec::new();
        if self.overflow > 0 {
            owed.push((
                "lines of other kinds".to_string(),
                std::mem::take(&mut self.overflow),
            ));
        }
        self.seen.retain(|key, seen| {
            if now_ms.saturating_sub(seen.since_ms) < window {
                return true;
            }
            if seen.suppressed > 0 {
                owed.push((key.clone(), seen.suppressed));
            }
            false
        });
        owed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_are_counted_and_reported() {
        let mut f = RepeatFilter::new(10_000);
        let a = "Connect to ipv4#127.0.0.1:9092 failed (after 0ms in state CONNECT)";
        let a2 = "Connect to ipv4#127.0.0.1:9092 failed (after 12ms in state CONNECT)";
        assert_eq!(f.admit(a, 0), Verdict::Write { suppressed: 0 });
        assert_eq!(f.admit(a2, 1_000), Verdict::Suppress);
        assert_eq!(f.admit(a, 2_000), Verdict::Suppress);
        assert_eq!(f.admit("other", 2_000), Verdict::Write { suppressed: 0 });
        assert_eq!(f.admit(a, 10_000), Verdict::Write { suppressed: 2 });
        assert_eq!(f.admit(a, 11_000), Verdict::Suppress);
        let owed = f.expire(30_000);
        assert_eq!(owed.len(), 1);
        assert_eq!(owed[0].1, 1);
        assert_eq!(f.admit(a, 30_000), Verdict::Write { suppressed: 0 });
    }

    #[test]
    fn kinds_are_bounded() {
        let mut f = RepeatFilter::new(10_000);
        for i in 0..10_000 {
            f.admit(&format!("refused topic-{}", "x".repeat(i % 5000)), 0);
        }
        assert!(f.seen.len() <= MAX_KEYS);
        let owed = f.expire(20_000);
        assert!(owed
            .iter()
            .any(|(k, n)| k == "lines of other kinds" && *n > 0));
    }
}
