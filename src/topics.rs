//! Which topics a worker produces to: a bounded registry of names a client may send.
//!
//! A name is looked up in the cluster's metadata the first time it is used (the requests
//! that use it meanwhile wait for the answer); a topic that exists gets a producer handle
//! and counts toward `kafka_max_topics`; one that does not is remembered as missing for a
//! while, in a bounded table, and never counts. The producer never asks brokers to create a
//! topic unless the operator opts in (`allow.auto.create.topics`), in which case names are
//! not looked up at all. So a stream of random names costs a bounded amount of memory.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};

/// How long a topic found missing is answered `404` without asking again.
pub const MISSING_TTL_MS: u64 = 10_000;
/// How many missing names are remembered.
pub const MAX_MISSING: usize = 4096;
/// How many lookups may run at once.
pub const MAX_LOOKUPS: usize = 64;

/// The registry's hash: a multiply and an xor-shift per 8-byte word (the shift folds the
/// high bits a multiply leaves a difference in back into the low ones; FxHash's rotate alone
/// let `...-1009` and `...-1086` collide), seeded at random for each registry. SipHash, the
/// standard map's, was 7 % of the module's own instructions per request
/// (bench/callgrind.py); a map of at most `kafka_max_topics` + `MAX_MISSING` + `MAX_LOOKUPS`
/// names does not need its resistance to collisions.
#[derive(Clone, Copy)]
pub struct NameHash(u64);

impl NameHash {
    fn random() -> NameHash {
        NameHash(std::collections::hash_map::RandomState::new().hash_one(0x6b_61_66_6b_61_u64))
    }
}

impl BuildHasher for NameHash {
    type Hasher = NameHasher;
    fn build_hasher(&self) -> NameHasher {
        NameHasher(self.0)
    }
}

pub struct NameHasher(u64);

impl NameHasher {
    fn add(&mut self, word: u64) {
        let h = (self.0 ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        self.0 = h ^ (h >> 32);
    }
}

impl Hasher for NameHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(last));
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// What to do with a request for a topic.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Produce with the topic's handle.
    Ready,
    /// The cluster has no such topic.
    Missing,
    /// `kafka_max_topics` topics are in use already.
    TooMany,
    /// Too many names are being looked up at once.
    Busy,
    /// Start a lookup for this name, then wait for it.
    Lookup,
    /// A lookup is running: wait for it.
    Wait,
    /// Lookups are off (auto-creation on): make a handle now and `insert` it.
    Create,
}

/// What a lookup found.
pub enum Found<H> {
    /// The topic exists (or could not be checked, and the producer will find out).
    Exists(H),
    Missing,
}

enum Entry<H, W> {
    Ready(H),
    Missing { until_ms: u64 },
    Checking(Vec<W>),
}

pub struct Registry<H, W> {
    entries: HashMap<Box<[u8]>, Entry<H, W>, NameHash>,
    max_ready: usize,
    ready: usize,
    missing: usize,
    lookups: usize,
    lookups_enabled: bool,
}

impl<H, W> Registry<H, W> {
    pub fn new(max_ready: usize, lookups_enabled: bool) -> Self {
        Registry {
            entries: HashMap::with_hasher(NameHash::random()),
            max_ready,
            ready: 0,
            missing: 0,
            lookups: 0,
            lookups_enabled,
        }
    }

    pub fn step(&mut self, name: &[u8], now_ms: u64) -> Step {
        match self.entries.get(name) {
            Some(Entry::Ready(_)) => return Step::Ready,
            Some(Entry::Checking(_)) => return Step::Wait,
            Some(Entry::Missing { until_ms }) if now_ms < *until_ms => return Step::Missing,
            Some(Entry::Missing { .. }) => {
                self.entries.remove(name);
                self.missing -= 1;
            }
            None => {}
        }
        if self.ready >= self.max_ready {
            return Step::TooMany;
        }
        if !self.lookups_enabled {
            return Step::Create;
        }
        if self.lookups >= MAX_LOOKUPS {
            return Step::Busy;
        }
        self.lookups += 1;
        self.entries
            .insert(name.into(), Entry::Checking(Vec::new()));
        Step::Lookup
    }

    pub fn handle(&self, name: &[u8]) -> Option<&H> {
        match self.entries.get(name) {
            Some(Entry::Ready(h)) => Some(h),
            _ => None,
        }
    }

    /// Adds a waiter to a running lookup; gives it back if there is none.
    pub fn park(&mut self, name: &[u8], waiter: W) -> Result<(), W> {
        match self.entries.get_mut(name) {
            Some(Entry::Checking(waiters)) => {
                waiters.push(waiter);
                Ok(())
            }
            _ => Err(waiter),
        }
    }

    /// Adds a topic without a lookup (after `Step::Create`).
    pub fn insert(&mut self, name: &[u8], handle: H) {
        if self.ready < self.max_ready && !self.entries.contains_key(name) {
            self.entries.insert(name.into(), Entry::Ready(handle));
            self.ready += 1;
        }
    }

    /// Records what a lookup found; returns the requests that waited for it.
    pub fn resolved(&mut self, name: &[u8], found: Found<H>, now_ms: u64) -> Vec<W> {
        let waiters = match self.entries.remove(name) {
            Some(Entry::Checking(w)) => {
                self.lookups -= 1;
                w
            }
            Some(other) => {
                // Not ours (cannot happen): keep what was there.
                self.entries.insert(name.into(), other);
                return Vec::new();
            }
            None => Vec::new(),
        };
        match found {
            // Over the cap (lookups overlapped): the waiters will be refused.
            Found::Exists(h) if self.ready < self.max_ready => {
                self.entries.insert(name.into(), Entry::Ready(h));
                self.ready += 1;
            }
            Found::Exists(_) => {}
            Found::Missing => {
                if self.missing >= MAX_MISSING {
                    self.forget_missing(now_ms);
                }
                self.entries.insert(
                    name.into(),
                    Entry::Missing {
                        until_ms: now_ms + MISSING_TTL_MS,
                    },
                );
                self.missing += 1;
            }
        }
        waiters
    }

    /// Makes room among the missing names: the expired ones, or else any one.
    fn forget_missing(&mut self, now_ms: u64) {
        let before = self.entries.len();
        self.entries
            .retain(|_, e| !matches!(e, Entry::Missing { until_ms } if *until_ms <= now_ms));
        self.missing -= before - self.entries.len();
        if self.missing >= MAX_MISSING {
            let victim = self
                .entries
                .iter()
                .find(|(_, e)| matches!(e, Entry::Missing { .. }))
                .map(|(k, _)| k.clone());
            if let Some(k) = victim {
                self.entries.remove(&k);
                self.missing -= 1;
            }
        }
    }

    /// Names whose lookup is running.
    pub fn checking(&self) -> Vec<Box<[u8]>> {
        self.entries
            .iter()
            .filter(|(_, e)| matches!(e, Entry::Checking(_)))
            .map(|(k, _)| k.clone())
            .collect()
    }

    pub fn ready(&self) -> usize {
        self.ready
    }

    pub fn lookups(&self) -> usize {
        self.lookups
    }

    /// Every waiter, for a worker that stops.
    pub fn take_waiters(&mut self) -> Vec<W> {
        let mut all = Vec::new();
        for e in self.entries.values_mut() {
            if let Entry::Checking(w) = e {
                all.append(w);
            }
        }
        all
    }

    /// The handles, dropped before the producer they belong to.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.ready = 0;
        self.missing = 0;
        self.lookups = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_hash_apart() {
        let h = NameHash::random();
        let mut seen = std::collections::HashSet::new();
        for i in 0..200_000 {
            let name = format!("my-poc-topic-{i}");
            assert!(seen.insert(h.hash_one(name.as_bytes())), "{name}");
            assert_eq!(h.hash_one(name.as_bytes()), h.hash_one(name.as_bytes()));
        }
        // The length is hashed too: a name and itself with a NUL byte differ.
        assert_ne!(h.hash_one(&b"a"[..]), h.hash_one(&b"a\0"[..]));
        assert_ne!(
            h.hash_one(&b"t"[..]),
            NameHash::random().hash_one(&b"t"[..])
        );
    }

    #[test]
    fn lookups_then_ready_or_missing() {
        let mut r: Registry<u32, &str> = Registry::new(2, true);
        assert_eq!(r.step(b"a", 0), Step::Lookup);
        assert_eq!(r.step(b"a", 0), Step::Wait);
        assert!(r.park(b"a", "w1").is_ok());
        assert_eq!(r.resolved(b"a", Found::Exists(7), 1), vec!["w1"]);
        assert_eq!(r.step(b"a", 2), Step::Ready);
        assert_eq!(r.handle(b"a"), Some(&7));

        assert_eq!(r.step(b"nope", 0), Step::Lookup);
        assert!(r.resolved(b"nope", Found::Missing, 5).is_empty());
        assert_eq!(r.step(b"nope", 6), Step::Missing);
        assert_eq!(r.step(b"nope", 5 + MISSING_TTL_MS), Step::Lookup);
        assert_eq!(r.ready(), 1);
    }

    #[test]
    fn missing_topics_never_count_and_the_cap_holds() {
        let mut r: Registry<u32, ()> = Registry::new(2, true);
        for i in 0..10_000u32 {
            let name = format!("random-{i}");
            assert_eq!(r.step(name.as_bytes(), 0), Step::Lookup);
            r.resolved(name.as_bytes(), Found::Missing, 0);
        }
        assert!(r.entries.len() <= MAX_MISSING);
        for name in ["a", "b"] {
            assert_eq!(r.step(name.as_bytes(), 0), Step::Lookup);
            r.resolved(name.as_bytes(), Found::Exists(1), 0);
        }
        assert_eq!(r.step(b"c", 0), Step::TooMany);
        assert_eq!(r.step(b"a", 0), Step::Ready);
    }

    #[test]
    fn lookups_are_bounded_and_overlaps_respect_the_cap() {
        let mut r: Registry<u32, ()> = Registry::new(1, true);
        for i in 0..MAX_LOOKUPS {
            assert_eq!(r.step(format!("t{i}").as_bytes(), 0), Step::Lookup);
        }
        assert_eq!(r.step(b"one-more", 0), Step::Busy);
        r.resolved(b"t0", Found::Exists(1), 0);
        r.resolved(b"t1", Found::Exists(2), 0);
        assert_eq!(r.ready(), 1);
        assert_eq!(r.step(b"t1", 0), Step::TooMany);
    }

    #[test]
    fn without_lookups_names_are_created() {
        let mut r: Registry<u32, ()> = Registry::new(1, false);
        assert_eq!(r.step(b"a", 0), Step::Create);
        r.insert(b"a", 1);
        assert_eq!(r.step(b"a", 0), Step::Ready);
        assert_eq!(r.step(b"b", 0), Step::TooMany);
    }
}
