//! The shared memory zone's layout: counter sets in an open-addressing table, and one gauge
//! block per worker. Every worker writes to it with atomics, without locks; any worker reads
//! it to render the metrics.
//!
//! Layout (all of it inside the memory nginx maps before it forks workers, so every process
//! sees it at the same address):
//!
//! ```text
//! Header | WorkerSlot x WORKER_SLOTS | Slot x n
//! ```
//!
//! Slot 0 is the overflow set (`location="other",topic="other"`), used when the table is
//! full. A set is found by hashing its (location, topic) and probing linearly; sets are
//! never removed, so a key once placed stays where it is, and a worker caches where its
//! sets are. A slot is claimed by moving its state from empty to writing (one process wins),
//! filling its key, then publishing it as ready.
//!
//! Gauges are written by one worker each and read by any: a sequence number (odd while
//! writing) lets a reader retry a copy that overlapped a write.

use core::cell::UnsafeCell;
use core::mem::size_of;
use core::ptr;
use core::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};

use super::{
    Broker, CounterSet, LastError, ProducerState, Snapshot, SpoolGauges, WorkerGauges, ZoneUsage,
    RESULTS,
};

/// Bumped whenever the layout changes: a zone with another layout is laid out anew.
const MAGIC: u64 = 0x6b61_666b_615f_7a03;

/// Worker gauge blocks: enough for the workers of a reload's old and new configurations,
/// up to 32 workers. A worker that finds none free claims one once an old worker exits.
pub const WORKER_SLOTS: usize = 64;
/// The longest location name (`kafka_status_zone`) and topic a set's key holds.
pub const LOCATION_MAX: usize = 128;
pub const TOPIC_MAX: usize = 249;
/// Brokers and bytes of names kept per worker.
pub const BROKERS_MAX: usize = 16;
const BROKER_NAME_MAX: usize = 64;
const STATE_MAX: usize = 32;
const ERROR_MAX: usize = 48;
/// The smallest zone that holds the header and a useful number of sets.
pub const MIN_SIZE: usize = 256 * 1024;
// The worker blocks take most of it: if they grow, this says whether MIN_SIZE must too.
const _: () = assert!(Zone::capacity(MIN_SIZE) >= 160);

/// Counters of a set, after the request results (indexed like `RESULTS`).
pub const BYTES: usize = RESULTS.len();
pub const DELIVERED: usize = RESULTS.len() + 1;
pub const FAILED: usize = RESULTS.len() + 2;
const COUNTERS: usize = RESULTS.len() + 3;

/// The `location` sites' sets are kept under (`kafka_sites`; their `topic` is the site's id):
/// no nginx location name starts with a control character. A snapshot lists them apart.
pub const SITES: &[u8] = b"\x01sites";

/// The label both parts of the overflow set have, and a location's set for topics past its cap.
pub const OTHER: &[u8] = b"other";

const EMPTY: u32 = 0;
const WRITING: u32 = 1;
const READY: u32 = 2;
/// How long a reader waits for another process to finish writing a slot's key: half spins,
/// half yields of the processor.
const SPINS: u32 = 1 << 16;

#[repr(C)]
struct Header {
    magic: AtomicU64,
    size: AtomicU64,
    slots: AtomicU64,
    used: AtomicU64,
}

/// One counter set.
#[repr(C)]
pub struct Slot {
    state: AtomicU32,
    hash: AtomicU32,
    location_len: AtomicU32,
    topic_len: AtomicU32,
    /// In a location's `""` set: how many topic sets the location has.
    topics: AtomicU32,
    /// A site's rate window (`kafka_sites`' `rate`): its second, and events taken in it.
    window: AtomicU64,
    taken: AtomicU64,
    counters: [AtomicU64; COUNTERS],
    key: UnsafeCell<[u8; LOCATION_MAX + TOPIC_MAX]>,
}

impl Slot {
    /// Adds `n` to counter `i` (a `RESULTS` index, `BYTES`, `DELIVERED` or `FAILED`).
    pub fn add(&self, i: usize, n: u64) {
        self.counters[i].fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self, i: usize) -> u64 {
        self.counters[i].load(Ordering::Relaxed)
    }

    /// Takes `n` events from a budget of `rate` per second (second `now`), for every process
    /// together; false, and nothing taken, when they do not fit.
    pub fn take(&self, n: u64, rate: u64, now: u64) -> bool {
        let window = self.window.load(Ordering::Acquire);
        if window != now
            && self
                .window
                .compare_exchange(window, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            // The process that opens a second resets its count (others racing it may count
            // a few events in the old one: the window is approximate by that much).
            self.taken.store(0, Ordering::Release);
        }
        let before = self.taken.fetch_add(n, Ordering::AcqRel);
        if before + n > rate {
            self.taken.fetch_sub(n, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// The key, once the slot is ready.
    fn key(&self) -> (&[u8], &[u8]) {
        let l = (self.location_len.load(Ordering::Relaxed) as usize).min(LOCATION_MAX);
        let t = (self.topic_len.load(Ordering::Relaxed) as usize).min(TOPIC_MAX);
        // SAFETY: the key is written once, before the state is published as ready with
        // release ordering; callers observed READY with acquire ordering.
        let key = unsafe { &*self.key.get() };
        (&key[..l], &key[l..l + t])
    }
}

#[repr(C)]
struct WorkerSlot {
    /// The owner's pid; 0 when free.
    pid: AtomicI32,
    seq: AtomicU32,
    data: UnsafeCell<WorkerData>,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct WorkerData {
    worker: u32,
    state: u32,
    queue_messages: u64,
    queue_bytes: u64,
    queue_max_messages: u64,
    queue_max_bytes: u64,
    in_flight: u64,
    last_error_time: u64,
    last_error_len: u32,
    last_error: [u8; ERROR_MAX],
    brokers_len: u32,
    /// Whether `spool` holds the worker's spool gauges (it has a `kafka_spool`).
    has_spool: u32,
    spool: SpoolGauges,
    brokers: [BrokerData; BROKERS_MAX],
}

#[repr(C)]
#[derive(Clone, Copy)]
struct BrokerData {
    name_len: u32,
    name: [u8; BROKER_NAME_MAX],
    state_len: u32,
    state: [u8; STATE_MAX],
    node_id: i32,
    rtt_us: u64,
    throttle_ms: u64,
    request_errors: u64,
}

const HEADER_BYTES: usize = size_of::<Header>() + WORKER_SLOTS * size_of::<WorkerSlot>();

/// Where a set was placed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Its own set.
    Own,
    /// The location has as many topic sets as the cap: its `topic="other"` set.
    Other,
    /// The zone is full: the overflow set.
    Full,
}

/// A zone laid out in memory that outlives it (nginx's shared memory, or a test's buffer).
#[derive(Clone, Copy)]
pub struct Zone {
    header: *const Header,
    workers: *const WorkerSlot,
    slots: *const Slot,
    n: usize,
}

// SAFETY: everything shared is reached through atomics, or written once before being
// published with release ordering, or copied under a sequence number.
unsafe impl Send for Zone {}
// SAFETY: as above.
unsafe impl Sync for Zone {}

fn fnv1a(location: &[u8], topic: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for &b in location.iter().chain(&[0xff]).chain(topic) {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    h
}

/// A key as a set holds it (each part cut to its bound), and its hash.
fn key<'a>(location: &'a [u8], topic: &'a [u8]) -> (&'a [u8], &'a [u8], u32) {
    let location = &location[..location.len().min(LOCATION_MAX)];
    let topic = &topic[..topic.len().min(TOPIC_MAX)];
    (location, topic, fnv1a(location, topic))
}

fn put(dst: &mut [u8], len: &mut u32, src: &[u8]) {
    let mut n = src.len().min(dst.len());
    // Cut at a character boundary: the text is shown as UTF-8.
    while n > 0 && n < src.len() && (src[n] & 0xc0) == 0x80 {
        n -= 1;
    }
    dst[..n].copy_from_slice(&src[..n]);
    *len = n as u32;
}

fn get(src: &[u8], len: u32) -> String {
    String::from_utf8_lossy(&src[..(len as usize).min(src.len())]).into_owned()
}

impl Zone {
    /// How many sets a zone of `size` bytes holds, the overflow set included.
    pub const fn capacity(size: usize) -> usize {
        size.saturating_sub(HEADER_BYTES) / size_of::<Slot>()
    }

    /// Lays the zone out in `mem`, unless it already holds a zone of this layout and size
    /// (nginx hands a reloaded configuration the previous one's memory): then its counters
    /// are kept.
    ///
    /// # Safety
    /// `mem` is valid for `size` bytes, aligned to 8, zeroed or holding an earlier zone, and
    /// outlives every `Zone` made from it; no other process uses it while this runs.
    pub unsafe fn init(mem: *mut u8, size: usize) -> Option<Zone> {
        let n = Self::capacity(size);
        if n < 2 || (mem as usize) % 8 != 0 {
            return None;
        }
        let header = mem.cast::<Header>();
        // SAFETY: the caller guarantees `mem` for `size` bytes, more than the header.
        let h = unsafe { &*header };
        let kept = h.magic.load(Ordering::Acquire) == MAGIC
            && h.size.load(Ordering::Relaxed) == size as u64
            && h.slots.load(Ordering::Relaxed) == n as u64;
        if !kept {
            // SAFETY: as above; nobody else uses the memory yet.
            unsafe { ptr::write_bytes(mem, 0, size) };
            h.size.store(size as u64, Ordering::Relaxed);
            h.slots.store(n as u64, Ordering::Relaxed);
        }
        // SAFETY: as above.
        let zone = unsafe { Self::attach(mem, size) }?;
        if !kept {
            let overflow = zone.slot(0);
            // SAFETY: slot 0 is not reachable by probing; written before the magic is set.
            unsafe { write_key(overflow, OTHER, OTHER, 0) };
            overflow.state.store(READY, Ordering::Release);
            h.used.store(1, Ordering::Relaxed);
            h.magic.store(MAGIC, Ordering::Release);
        }
        Some(zone)
    }

    /// A zone that `init` laid out.
    ///
    /// # Safety
    /// As for `init`, and `init` returned a zone for this memory.
    pub unsafe fn attach(mem: *mut u8, size: usize) -> Option<Zone> {
        let n = Self::capacity(size);
        if n < 2 {
            return None;
        }
        let header = mem.cast::<Header>().cast_const();
        // SAFETY: the caller guarantees `mem` for `size` bytes: header, workers, then `n` slots.
        let (workers, slots) = unsafe {
            let w = mem
                .add(size_of::<Header>())
                .cast::<WorkerSlot>()
                .cast_const();
            (w, mem.add(HEADER_BYTES).cast::<Slot>().cast_const())
        };
        Some(Zone {
            header,
            workers,
            slots,
            n,
        })
    }

    /// A zone that `init` laid out, found again from its memory alone.
    ///
    /// # Safety
    /// `mem` is memory that `init` returned a zone for, still mapped.
    pub unsafe fn reuse(mem: *mut u8) -> Option<Zone> {
        // SAFETY: the caller guarantees a laid-out zone, which starts with its header.
        let h = unsafe { &*mem.cast::<Header>() };
        if h.magic.load(Ordering::Acquire) != MAGIC {
            return None;
        }
        // SAFETY: as above; the header says how large the zone is.
        unsafe { Self::attach(mem, h.size.load(Ordering::Relaxed) as usize) }
    }

    /// The zone's size in bytes.
    pub fn size(&self) -> usize {
        self.header().size.load(Ordering::Relaxed) as usize
    }

    fn header(&self) -> &Header {
        // SAFETY: valid for the zone's life (see `init`).
        unsafe { &*self.header }
    }

    fn slot(&self, i: usize) -> &Slot {
        debug_assert!(i < self.n);
        // SAFETY: `i < n`, within the memory `init` checked.
        unsafe { &*self.slots.add(i) }
    }

    fn worker_slot(&self, i: usize) -> &WorkerSlot {
        // SAFETY: `i < WORKER_SLOTS`, within the header.
        unsafe { &*self.workers.add(i) }
    }

    /// The overflow set.
    pub fn overflow(&self) -> &Slot {
        self.slot(0)
    }

    /// The slots a key with `hash` may be in, in probing order (slot 0, the overflow set,
    /// is never probed).
    fn probe(&self, hash: u32) -> impl Iterator<Item = &Slot> {
        let probes = self.n - 1;
        let start = hash as usize % probes;
        (0..probes).map(move |step| self.slot(1 + (start + step) % probes))
    }

    /// The set for `(location, topic)`, placed if new; `None` when the zone is full.
    fn find_or_place(&self, location: &[u8], topic: &[u8]) -> Option<(&Slot, bool)> {
        let (location, topic, hash) = key(location, topic);
        for slot in self.probe(hash) {
            let mut state = slot.state.load(Ordering::Acquire);
            if state == EMPTY {
                match slot.state.compare_exchange(
                    EMPTY,
                    WRITING,
                    Ordering::Acquire,
                    Ordering::Acquire,
                ) {
                    Ok(_) => {
                        // SAFETY: this process won the slot; nobody reads its key before READY.
                        unsafe { write_key(slot, location, topic, hash) };
                        slot.state.store(READY, Ordering::Release);
                        self.header().used.fetch_add(1, Ordering::Relaxed);
                        return Some((slot, true));
                    }
                    Err(now) => state = now,
                }
            }
            let mut spins = 0;
            while state == WRITING && spins < SPINS {
                if spins < SPINS / 2 {
                    core::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
                spins += 1;
                state = slot.state.load(Ordering::Acquire);
            }
            if state == WRITING {
                // Another process is placing a set here and has not finished: it may be this
                // very key, so probing on could place it twice. Count in the overflow set.
                return None;
            }
            if state == READY
                && slot.hash.load(Ordering::Relaxed) == hash
                && slot.key() == (location, topic)
            {
                return Some((slot, false));
            }
        }
        None
    }

    /// A location's set for refusals before a topic is known (`topic=""`).
    pub fn location(&self, location: &[u8]) -> (&Slot, Placement) {
        match self.find_or_place(location, b"") {
            Some((slot, _)) => (slot, Placement::Own),
            None => (self.overflow(), Placement::Full),
        }
    }

    /// The set for `topic` under `location`, which has at most `cap` topic sets; past it, the
    /// location's `topic="other"` set.
    pub fn topic(&self, location: &[u8], topic: &[u8], cap: usize) -> (&Slot, Placement) {
        // A placed set is used whatever the count says: racing workers may hold places.
        if let Some(slot) = self.find(location, topic) {
            return (slot, Placement::Own);
        }
        let (base, placed) = self.location(location);
        if placed == Placement::Full {
            return (base, placed);
        }
        // Claim a place under the cap first, so that racing workers never exceed it.
        let claimed = base.topics.fetch_add(1, Ordering::AcqRel) < cap as u32;
        if !claimed {
            base.topics.fetch_sub(1, Ordering::AcqRel);
            // Already placed sets keep counting.
            if let Some(slot) = self.find(location, topic) {
                return (slot, Placement::Own);
            }
            return match self.find_or_place(location, OTHER) {
                Some((slot, _)) => (slot, Placement::Other),
                None => (self.overflow(), Placement::Full),
            };
        }
        match self.find_or_place(location, topic) {
            Some((slot, true)) => (slot, Placement::Own),
            Some((slot, false)) => {
                base.topics.fetch_sub(1, Ordering::AcqRel);
                (slot, Placement::Own)
            }
            None => {
                base.topics.fetch_sub(1, Ordering::AcqRel);
                (self.overflow(), Placement::Full)
            }
        }
    }

    /// An existing set, without placing one.
    fn find(&self, location: &[u8], topic: &[u8]) -> Option<&Slot> {
        let (location, topic, hash) = key(location, topic);
        for slot in self.probe(hash) {
            match slot.state.load(Ordering::Acquire) {
                EMPTY => return None,
                READY
                    if slot.hash.load(Ordering::Relaxed) == hash
                        && slot.key() == (location, topic) =>
                {
                    return Some(slot)
                }
                _ => {}
            }
        }
        None
    }

    /// Claims a gauge block for process `pid`, taking over one whose owner is gone (`alive`
    /// says which pids still run); `None` when every block belongs to a live process.
    pub fn claim_worker(&self, pid: i32, alive: impl Fn(i32) -> bool) -> Option<WorkerHandle> {
        for pass in 0..2 {
            for i in 0..WORKER_SLOTS {
                let w = self.worker_slot(i);
                let owner = w.pid.load(Ordering::Acquire);
                let free = owner == 0 || owner == pid || (pass == 1 && !alive(owner));
                if free
                    && w.pid
                        .compare_exchange(owner, pid, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                {
                    let handle = WorkerHandle { slot: w, pid };
                    handle.publish(&WorkerGauges {
                        pid,
                        ..WorkerGauges::default()
                    });
                    return Some(handle);
                }
            }
        }
        None
    }

    /// A copy of everything, for rendering. Gauges of processes that are gone are left out.
    pub fn snapshot(&self, name: &str, alive: impl Fn(i32) -> bool) -> Snapshot {
        let size = self.size();
        let mut counters = Vec::new();
        for i in 0..self.n {
            let slot = self.slot(i);
            if slot.state.load(Ordering::Acquire) != READY {
                continue;
            }
            // The overflow set is shown once something was counted in it.
            if i == 0 && (0..COUNTERS).all(|c| slot.get(c) == 0) {
                continue;
            }
            let (location, topic) = slot.key();
            let mut set = CounterSet {
                location: String::from_utf8_lossy(location).into_owned(),
                topic: String::from_utf8_lossy(topic).into_owned(),
                bytes: slot.get(BYTES),
                delivered: slot.get(DELIVERED),
                failed: slot.get(FAILED),
                ..CounterSet::default()
            };
            for (r, n) in set.requests.iter_mut().enumerate() {
                *n = slot.get(r);
            }
            counters.push(set);
        }
        counters.sort_by(|a, b| (&a.location, &a.topic).cmp(&(&b.location, &b.topic)));
        let (sites, counters): (Vec<CounterSet>, Vec<CounterSet>) = counters
            .into_iter()
            .partition(|c| c.location.as_bytes() == SITES);
        let overflow = self.overflow();
        let mut workers: Vec<WorkerGauges> = (0..WORKER_SLOTS)
            .filter_map(|i| read_worker(self.worker_slot(i)))
            .filter(|w| alive(w.pid))
            .collect();
        workers.sort_by_key(|w| (w.worker, w.pid));
        Snapshot {
            zone: ZoneUsage {
                name: name.to_owned(),
                size_bytes: size as u64,
                slots: self.n as u64,
                slots_used: self.header().used.load(Ordering::Relaxed),
                overflow: (0..RESULTS.len()).map(|r| overflow.get(r)).sum(),
            },
            counters,
            sites,
            workers,
        }
    }
}

/// # Safety
/// The caller owns the slot (state WRITING, or not yet reachable).
unsafe fn write_key(slot: &Slot, location: &[u8], topic: &[u8], hash: u32) {
    // SAFETY: the caller owns the slot: nobody reads the key until it is published.
    let key = unsafe { &mut *slot.key.get() };
    key[..location.len()].copy_from_slice(location);
    key[location.len()..location.len() + topic.len()].copy_from_slice(topic);
    slot.location_len
        .store(location.len() as u32, Ordering::Relaxed);
    slot.topic_len.store(topic.len() as u32, Ordering::Relaxed);
    slot.hash.store(hash, Ordering::Relaxed);
}

fn read_worker(w: &WorkerSlot) -> Option<WorkerGauges> {
    for _ in 0..64 {
        let pid = w.pid.load(Ordering::Acquire);
        if pid == 0 {
            return None;
        }
        let before = w.seq.load(Ordering::Acquire);
        if before % 2 == 1 {
            core::hint::spin_loop();
            continue;
        }
        // SAFETY: a plain-data copy; one that overlapped a write is detected by the sequence
        // number and thrown away. Volatile: the writer is another process.
        let d = unsafe { ptr::read_volatile(w.data.get()) };
        core::sync::atomic::fence(Ordering::Acquire);
        if w.seq.load(Ordering::Relaxed) != before {
            continue;
        }
        let brokers = d.brokers[..(d.brokers_len as usize).min(BROKERS_MAX)]
            .iter()
            .map(|b| Broker {
                name: get(&b.name, b.name_len),
                node_id: b.node_id,
                state: get(&b.state, b.state_len),
                rtt_us: b.rtt_us,
                throttle_ms: b.throttle_ms,
                request_errors: b.request_errors,
            })
            .collect();
        return Some(WorkerGauges {
            worker: d.worker,
            pid,
            state: ProducerState::from_code(d.state),
            queue_messages: d.queue_messages,
            queue_bytes: d.queue_bytes,
            queue_max_messages: d.queue_max_messages,
            queue_max_bytes: d.queue_max_bytes,
            in_flight: d.in_flight,
            last_error: (d.last_error_len > 0).then(|| LastError {
                name: get(&d.last_error, d.last_error_len),
                time: d.last_error_time,
            }),
            brokers,
            spool: (d.has_spool != 0).then_some(d.spool),
        });
    }
    None
}

/// A worker's own gauge block. Like `Zone`, it points into the zone's memory, which must
/// outlive it.
pub struct WorkerHandle {
    slot: *const WorkerSlot,
    pid: i32,
}

impl WorkerHandle {
    fn slot(&self) -> &WorkerSlot {
        // SAFETY: within the zone's memory, which outlives the handle (see the type).
        unsafe { &*self.slot }
    }

    /// Publishes this worker's gauges.
    pub fn publish(&self, g: &WorkerGauges) {
        let mut d = WorkerData {
            worker: g.worker,
            state: g.state.code(),
            queue_messages: g.queue_messages,
            queue_bytes: g.queue_bytes,
            queue_max_messages: g.queue_max_messages,
            queue_max_bytes: g.queue_max_bytes,
            in_flight: g.in_flight,
            last_error_time: 0,
            last_error_len: 0,
            last_error: [0; ERROR_MAX],
            brokers_len: 0,
            has_spool: g.spool.is_some().into(),
            spool: g.spool.unwrap_or_default(),
            brokers: [BrokerData {
                name_len: 0,
                name: [0; BROKER_NAME_MAX],
                state_len: 0,
                state: [0; STATE_MAX],
                node_id: 0,
                rtt_us: 0,
                throttle_ms: 0,
                request_errors: 0,
            }; BROKERS_MAX],
        };
        if let Some(e) = &g.last_error {
            d.last_error_time = e.time;
            put(&mut d.last_error, &mut d.last_error_len, e.name.as_bytes());
        }
        for (b, src) in d.brokers.iter_mut().zip(&g.brokers) {
            put(&mut b.name, &mut b.name_len, src.name.as_bytes());
            put(&mut b.state, &mut b.state_len, src.state.as_bytes());
            b.node_id = src.node_id;
            b.rtt_us = src.rtt_us;
            b.throttle_ms = src.throttle_ms;
            b.request_errors = src.request_errors;
            d.brokers_len += 1;
        }
        let slot = self.slot();
        // Even, even if a previous owner died halfway through a write.
        let seq = slot.seq.load(Ordering::Relaxed) & !1;
        slot.seq.store(seq.wrapping_add(1), Ordering::Relaxed);
        core::sync::atomic::fence(Ordering::Release);
        // SAFETY: this worker alone writes its block; readers detect the overlap by `seq`.
        unsafe { ptr::write_volatile(slot.data.get(), d) };
        slot.seq.store(seq.wrapping_add(2), Ordering::Release);
    }

    /// Gives the block back, when the worker exits.
    pub fn release(&self) {
        let _ = self
            .slot()
            .pid
            .compare_exchange(self.pid, 0, Ordering::AcqRel, Ordering::Acquire);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Heap memory standing in for a shared memory zone.
    struct Mem(Vec<u64>);

    impl Mem {
        fn new(size: usize) -> Mem {
            Mem(vec![0; size / 8])
        }
        fn zone(&mut self) -> Zone {
            let size = self.0.len() * 8;
            unsafe { Zone::init(self.0.as_mut_ptr().cast(), size) }.unwrap()
        }
    }

    #[test]
    fn counts_by_location_and_topic() {
        let mut m = Mem::new(MIN_SIZE);
        let z = m.zone();
        let (a, p) = z.topic(b"/a", b"t1", 10);
        assert_eq!(p, Placement::Own);
        a.add(0, 3);
        a.add(BYTES, 30);
        z.topic(b"/a", b"t1", 10).0.add(0, 1);
        z.location(b"/a").0.add(5, 2);
        z.topic(b"/b", b"t1", 10).0.add(DELIVERED, 7);
        let s = z.snapshot("kafka", |_| true);
        let find = |l: &str, t: &str| {
            s.counters
                .iter()
                .find(|c| c.location == l && c.topic == t)
                .unwrap()
                .clone()
        };
        assert_eq!(find("/a", "t1").requests[0], 4);
        assert_eq!(find("/a", "t1").bytes, 30);
        assert_eq!(find("/a", "").requests[5], 2);
        assert_eq!(find("/b", "t1").delivered, 7);
        // The overflow set, "/a" "", "/a" t1, "/b" "", "/b" t1; the empty overflow set is
        // not shown.
        assert_eq!(s.zone.slots_used, 5);
        assert_eq!(s.counters.len(), 4);
    }

    #[test]
    fn counts_survive_a_second_init_of_the_same_memory() {
        let mut m = Mem::new(MIN_SIZE);
        m.zone().topic(b"/a", b"t", 4).0.add(0, 9);
        let z = m.zone();
        assert_eq!(z.topic(b"/a", b"t", 4).0.get(0), 9);
        let again = unsafe { Zone::reuse(m.0.as_mut_ptr().cast()) }.unwrap();
        assert_eq!(again.topic(b"/a", b"t", 4).0.get(0), 9);
        assert_eq!(again.size(), MIN_SIZE);
        assert_eq!(z.snapshot("k", |_| true).zone.slots_used, 3);
    }

    #[test]
    fn a_different_layout_starts_over() {
        let mut m = Mem::new(MIN_SIZE);
        m.zone().topic(b"/a", b"t", 4).0.add(0, 9);
        // SAFETY: a test buffer; the header's magic is the first word.
        m.0[0] ^= 1;
        let z = m.zone();
        assert_eq!(z.topic(b"/a", b"t", 4).0.get(0), 0);
    }

    #[test]
    fn topics_past_the_cap_count_as_other() {
        let mut m = Mem::new(MIN_SIZE);
        let z = m.zone();
        assert_eq!(z.topic(b"/a", b"t1", 2).1, Placement::Own);
        assert_eq!(z.topic(b"/a", b"t2", 2).1, Placement::Own);
        let (other, p) = z.topic(b"/a", b"t3", 2);
        assert_eq!(p, Placement::Other);
        other.add(0, 1);
        // Placed sets keep their own place; other locations have caps of their own.
        assert_eq!(z.topic(b"/a", b"t1", 2).1, Placement::Own);
        assert_eq!(z.topic(b"/b", b"t3", 2).1, Placement::Own);
        let s = z.snapshot("k", |_| true);
        assert!(s
            .counters
            .iter()
            .any(|c| c.location == "/a" && c.topic == "other" && c.requests[0] == 1));
    }

    #[test]
    fn long_names_keep_their_sets_at_the_cap() {
        let mut m = Mem::new(MIN_SIZE);
        let z = m.zone();
        let long = vec![b'l'; LOCATION_MAX + 10];
        assert_eq!(z.topic(&long, b"t1", 1).1, Placement::Own);
        // At the cap, the placed set is found again, not counted as "other".
        assert_eq!(z.topic(&long, b"t1", 1).1, Placement::Own);
        assert_eq!(z.topic(&long, b"t2", 1).1, Placement::Other);
    }

    #[test]
    fn a_gauge_block_left_mid_write_is_published_again() {
        let mut m = Mem::new(MIN_SIZE);
        let z = m.zone();
        let w = z.claim_worker(7, |_| true).unwrap();
        // The previous owner died halfway through a write: the sequence number is odd.
        w.slot().seq.store(5, Ordering::Relaxed);
        w.publish(&WorkerGauges {
            pid: 7,
            in_flight: 3,
            ..WorkerGauges::default()
        });
        let s = z.snapshot("k", |_| true);
        assert_eq!(s.workers.len(), 1);
        assert_eq!(s.workers[0].in_flight, 3);
    }

    #[test]
    fn a_full_zone_counts_in_the_overflow_set() {
        let mut m = Mem::new(MIN_SIZE);
        let z = m.zone();
        let n = Zone::capacity(MIN_SIZE);
        assert!(n > 100, "{n} sets");
        let mut full = 0;
        for i in 0..n + 10 {
            let (slot, p) = z.topic(b"/a", format!("t{i}").as_bytes(), usize::MAX);
            slot.add(0, 1);
            if p == Placement::Full {
                full += 1;
            }
        }
        // The overflow set and "/a" "" take two places.
        assert_eq!(full, 12);
        let s = z.snapshot("k", |_| true);
        assert_eq!(s.zone.slots_used as usize, n);
        assert_eq!(s.zone.overflow, 12);
        let total: u64 = s.counters.iter().map(|c| c.requests[0]).sum();
        assert_eq!(total as usize, n + 10);
        // Existing sets are still found when the zone is full.
        assert_eq!(z.topic(b"/a", b"t0", usize::MAX).1, Placement::Own);
    }

    #[test]
    fn long_names_are_cut_to_the_key() {
        let mut m = Mem::new(MIN_SIZE);
        let z = m.zone();
        let long = vec![b'x'; 400];
        z.topic(&long, &long, 4).0.add(0, 1);
        z.topic(&long, &long, 4).0.add(0, 1);
        let s = z.snapshot("k", |_| true);
        let c = s.counters.iter().find(|c| c.requests[0] == 2).unwrap();
        assert_eq!(c.location.len(), LOCATION_MAX);
        assert_eq!(c.topic.len(), TOPIC_MAX);
    }

    #[test]
    fn workers_claim_publish_and_release() {
        let mut m = Mem::new(MIN_SIZE);
        let z = m.zone();
        let w = z.claim_worker(100, |_| true).unwrap();
        w.publish(&WorkerGauges {
            worker: 1,
            pid: 100,
            state: ProducerState::Up,
            queue_messages: 5,
            in_flight: 6,
            last_error: Some(LastError {
                name: "_MSG_TIMED_OUT".into(),
                time: 1_800_000_000,
            }),
            brokers: vec![Broker {
                name: "127.0.0.1:9092/1".into(),
                node_id: 1,
                state: "UP".into(),
                rtt_us: 250,
                throttle_ms: 0,
                request_errors: 2,
            }],
            ..WorkerGauges::default()
        });
        let s = z.snapshot("k", |_| true);
        assert_eq!(s.workers.len(), 1);
        let g = &s.workers[0];
        assert_eq!((g.worker, g.pid, g.state), (1, 100, ProducerState::Up));
        assert_eq!(g.brokers[0].name, "127.0.0.1:9092/1");
        assert_eq!(g.last_error.as_ref().unwrap().name, "_MSG_TIMED_OUT");
        // A dead process's gauges are not shown.
        assert!(z.snapshot("k", |p| p != 100).workers.is_empty());
        w.release();
        assert!(z.snapshot("k", |_| true).workers.is_empty());
    }

    #[test]
    fn spool_gauges_round_trip() {
        let mut m = Mem::new(MIN_SIZE);
        let z = m.zone();
        let w = z.claim_worker(100, |_| true).unwrap();
        let spool = SpoolGauges {
            bytes: 1 << 40,
            files: 2,
            journaled: 3,
            spooled: 4,
            replayed: 5,
            dead: 6,
            refused: 7,
            corrupt: 8,
            torn: 9,
            adopted: u64::MAX,
            syncs: 10,
        };
        let gauges = WorkerGauges {
            worker: 3,
            pid: 100,
            state: ProducerState::Down,
            in_flight: 11,
            spool: Some(spool),
            brokers: vec![Broker {
                name: "b:9092/1".into(),
                ..Broker::default()
            }],
            ..WorkerGauges::default()
        };
        w.publish(&gauges);
        let s = z.snapshot("k", |_| true);
        assert_eq!((s.workers.len(), &s.workers[0]), (1, &gauges));
        // A worker without a spool (or one that drops it on reconfiguration) shows none.
        w.publish(&WorkerGauges {
            spool: None,
            ..gauges
        });
        assert_eq!(z.snapshot("k", |_| true).workers[0].spool, None);
        // A newly claimed block starts without.
        let other = z.claim_worker(101, |_| true).unwrap();
        let s = z.snapshot("k", |_| true);
        let new = s.workers.iter().find(|w| w.pid == 101).unwrap();
        assert_eq!(new.spool, None);
        other.release();
    }

    #[test]
    fn blocks_of_dead_workers_are_taken_over() {
        let mut m = Mem::new(MIN_SIZE);
        let z = m.zone();
        for pid in 1..=WORKER_SLOTS as i32 {
            assert!(z.claim_worker(pid, |_| true).is_some());
        }
        assert!(z.claim_worker(1000, |_| true).is_none());
        assert!(z.claim_worker(1000, |p| p != 7).is_some());
    }

    #[test]
    fn too_small_memory_is_refused() {
        let mut m = Mem::new(HEADER_BYTES);
        let size = m.0.len() * 8;
        assert!(unsafe { Zone::init(m.0.as_mut_ptr().cast(), size) }.is_none());
    }
}
