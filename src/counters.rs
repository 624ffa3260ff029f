//! This process's side of the metrics zone (`crate::metrics::zone`, mapped by `crate::shm`):
//! where its requests and deliveries are counted, and its gauge block.
//!
//! Every worker has one, with or without a producer (a worker whose producer failed still
//! counts what it refuses). Sets are found once and then cached: a location's `topic=""` set
//! here, each (location, topic) set in the worker's topic routes.

use std::cell::RefCell;
use std::collections::HashMap;

use ngx::ffi::{ngx_cycle_t, ngx_uint_t};
use ngx::http::HttpModuleMainConf;

use crate::metrics::zone::{Placement, Slot, WorkerHandle, Zone};
use crate::metrics::WorkerGauges;
use crate::Module;

thread_local! {
    static COUNTERS: RefCell<Option<Counters>> = const { RefCell::new(None) };
}

/// A counter set in the zone, which stays mapped as long as this process runs with the
/// configuration it was found in (the worker's whole life; in a single process, until
/// `reconfigure` drops every `SetRef` with the worker).
#[derive(Clone, Copy)]
pub struct SetRef(*const Slot);

impl SetRef {
    pub fn add(self, counter: usize, n: u64) {
        // SAFETY: see the type: the zone outlives every `SetRef`.
        unsafe { &*self.0 }.add(counter, n);
    }

    /// Takes `n` events of a budget of `rate` per second, shared by every worker.
    pub fn take(self, n: u64, rate: u64, now: u64) -> bool {
        // SAFETY: as for `add`.
        unsafe { &*self.0 }.take(n, rate, now)
    }
}

/// The counter set of site `id`; `None` without a zone.
pub fn site_set(id: &[u8]) -> Option<SetRef> {
    COUNTERS.with(|c| {
        let c = c.borrow();
        let c = c.as_ref()?;
        let (slot, placed) = c.zone.topic(crate::metrics::zone::SITES, id, usize::MAX);
        complain(placed, b"(sites)", id);
        Some(SetRef(slot))
    })
}

struct Counters {
    zone: Zone,
    /// This worker's gauge block: claimed at start, or, while the workers of a reload's
    /// old configuration hold every block, at the first publication after one is free.
    worker: Option<WorkerHandle>,
    pid: i32,
    /// Each location's `topic=""` set.
    locations: HashMap<Vec<u8>, SetRef>,
    /// Topic sets per location: `kafka_max_topics`.
    cap: usize,
}

/// Whether a process with this pid still runs.
fn alive(pid: i32) -> bool {
    // SAFETY: a signal-0 probe; no signal is sent.
    let sent = unsafe { libc::kill(pid, 0) } == 0;
    sent || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// Attaches this process to the zone, if the configuration has one, and claims its gauge
/// block.
pub fn start(cycle: &mut ngx_cycle_t) {
    let Some(mcf) = Module::main_conf(cycle) else {
        return;
    };
    let Some(zone) = crate::shm::zone(mcf.metrics_zone) else {
        return;
    };
    // SAFETY: plain reads of nginx's process globals.
    let (pid, number) = unsafe { (ngx::ffi::ngx_pid, ngx::ffi::ngx_worker as u32) };
    let counters = Counters {
        zone,
        worker: None,
        pid,
        locations: HashMap::new(),
        cap: mcf.max_topics,
    };
    COUNTERS.with(|c| *c.borrow_mut() = Some(counters));
    publish(&WorkerGauges {
        worker: number,
        pid,
        ..WorkerGauges::default()
    });
}

/// Gives the gauge block back, when the process exits or reconfigures.
pub fn stop() {
    if let Some(c) = COUNTERS.with(|c| c.borrow_mut().take()) {
        if let Some(w) = &c.worker {
            w.release();
        }
    }
}

pub fn enabled() -> bool {
    COUNTERS.with(|c| c.borrow().is_some())
}

/// Publishes this worker's gauges.
pub fn publish(gauges: &WorkerGauges) {
    COUNTERS.with(|c| {
        let mut c = c.borrow_mut();
        let Some(c) = c.as_mut() else {
            return;
        };
        if c.worker.is_none() {
            c.worker = c.zone.claim_worker(c.pid, alive);
            if c.worker.is_none() {
                crate::delivery::log_limited(
                    crate::log::NGX_LOG_WARN as ngx_uint_t,
                    // SAFETY: `ngx_cycle` is the current cycle on the worker thread.
                    unsafe { (*ngx::ffi::ngx_cycle).log },
                    "\"kafka_metrics_zone\" has no gauge block free for this worker yet",
                );
            }
        }
        if let Some(w) = &c.worker {
            w.publish(gauges);
        }
    });
}

/// Counts a request of `location` that ended with `result` before a topic was known to exist.
pub fn refused(location: &[u8], result: usize) {
    COUNTERS.with(|c| {
        let mut c = c.borrow_mut();
        let Some(c) = c.as_mut() else {
            return;
        };
        let zone = c.zone;
        let set = *c.locations.entry(location.to_vec()).or_insert_with(|| {
            let (slot, placed) = zone.location(location);
            complain(placed, location, b"");
            SetRef(slot)
        });
        set.add(result, 1);
    });
}

/// The set of `topic` under `location`: its own, the location's `other` past the cap, or
/// the zone's overflow set when it is full. `None` without a zone.
pub fn topic_set(location: &[u8], topic: &[u8]) -> Option<SetRef> {
    COUNTERS.with(|c| {
        let c = c.borrow();
        let c = c.as_ref()?;
        let (slot, placed) = c.zone.topic(location, topic, c.cap);
        complain(placed, location, topic);
        Some(SetRef(slot))
    })
}

fn complain(placed: Placement, location: &[u8], topic: &[u8]) {
    if placed != Placement::Full {
        return;
    }
    crate::delivery::log_limited(
        crate::log::NGX_LOG_ERR as ngx_uint_t,
        // SAFETY: `ngx_cycle` is the current cycle on the worker thread.
        unsafe { (*ngx::ffi::ngx_cycle).log },
        &format!(
            "\"kafka_metrics_zone\" is full: location \"{}\" topic \"{}\" counted as \"other\"; \
             make the zone larger",
            String::from_utf8_lossy(location).escape_debug(),
            String::from_utf8_lossy(topic).escape_debug(),
        ),
    );
}

/// A copy of the whole zone, for the metrics endpoint; `None` without a zone.
pub fn snapshot(shm_zone: *mut ngx::ffi::ngx_shm_zone_t) -> Option<crate::metrics::Snapshot> {
    let zone = crate::shm::zone(shm_zone)?;
    Some(zone.snapshot(crate::shm::NAME, alive))
}
