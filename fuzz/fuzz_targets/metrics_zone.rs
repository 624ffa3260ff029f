//! The metrics zone: any sequence of counts under any (location, topic) names and caps, on
//! a zone of any size, loses nothing. Every count lands in exactly one set: its own, its
//! location's `other` past the cap, or the overflow set when the zone is full; no two sets
//! share a key; a location never has more topic sets than the largest cap it was given;
//! what a snapshot shows renders in both forms, and the JSON reads back.
#![no_main]

use std::collections::{HashMap, HashSet};

use libfuzzer_sys::fuzz_target;
use nginx_kafka_fuzz::metrics::zone::{Placement, Zone, MIN_SIZE};
use nginx_kafka_fuzz::metrics::{render, RESULTS};

fuzz_target!(|data: &[u8]| {
    let Some((&size_byte, ops)) = data.split_first() else {
        return;
    };
    // From the smallest zone to a few times larger: small ones fill up.
    let size = MIN_SIZE + usize::from(size_byte) * 4096;
    let mut mem = vec![0u64; size / 8];
    // SAFETY: heap memory of `size` bytes, aligned to 8, that outlives the zone.
    let zone = unsafe { Zone::init(mem.as_mut_ptr().cast(), size) }.expect("a zone");

    let mut sent = 0u64;
    let mut caps: HashMap<Vec<u8>, usize> = HashMap::new();
    for op in ops.chunks(4) {
        let [a, b, c, d] = [op[0], *op.get(1).unwrap_or(&0), *op.get(2).unwrap_or(&0), *op.get(3).unwrap_or(&0)];
        let location = format!("/l{}", a % 8).into_bytes();
        let topic = match b % 16 {
            0 => Vec::new(),
            15 => vec![b'x'; 300 + usize::from(c)],
            n => format!("t{n}-{}", c % 64).into_bytes(),
        };
        let cap = usize::from(d % 8);
        let result = usize::from(d) % RESULTS.len();
        let (set, placed) = if topic.is_empty() {
            zone.location(&location)
        } else {
            let max = caps.entry(location.clone()).or_default();
            *max = (*max).max(cap);
            zone.topic(&location, &topic, cap)
        };
        if placed == Placement::Other {
            assert!(cap <= 8);
        }
        set.add(result, 1);
        sent += 1;
    }

    let s = zone.snapshot("fuzz", |_| true);
    let counted: u64 = s.counters.iter().flat_map(|c| c.requests).sum();
    assert_eq!(counted, sent, "every count lands in one set");
    assert!(s.zone.slots_used <= s.zone.slots);
    let mut keys = HashSet::new();
    let mut per_location: HashMap<&str, usize> = HashMap::new();
    for c in &s.counters {
        assert!(keys.insert((&c.location, &c.topic)), "one set per key: {c:?}");
        if !c.topic.is_empty() && c.topic != "other" {
            *per_location.entry(&c.location).or_default() += 1;
        }
    }
    for (location, n) in per_location {
        let cap = caps.get(location.as_bytes()).copied().unwrap_or(0);
        assert!(n <= cap, "{location}: {n} topic sets, cap {cap}");
    }
    let mut text = Vec::new();
    render::prometheus(&s, &mut text);
    assert!(std::str::from_utf8(&text).is_ok());
    let mut json = Vec::new();
    render::json(&s, &mut json);
    let _: serde_json::Value = serde_json::from_slice(&json).expect("JSON reads back");
});
