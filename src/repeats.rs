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
            self.expire(now_ms);
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
}
