//! What the producer reports: delivery results (counted; a failure is logged with its whole
//! payload, escaped so that it can be produced again), and librdkafka's own log lines and
//! errors, rate-limited.
//!
//! Threading: everything here runs on the worker thread, which alone serves the producer's
//! main queue (see `worker/queue.rs`).

use std::borrow::Cow;
use std::cell::RefCell;

use ngx::ffi::{ngx_current_msec, ngx_cycle, ngx_log_t, ngx_uint_t};

use crate::counters::SetRef;
use crate::failure_line::failure_line_with;
use crate::log::{write_line, NGX_LOG_ERR, NGX_LOG_INFO, NGX_LOG_NOTICE, NGX_LOG_WARN};
use crate::metrics::zone::{DELIVERED, FAILED};
use crate::repeats::{RepeatFilter, Verdict};

/// How long identical complaints are held back after one is written.
const REPEAT_WINDOW_MS: u64 = 10_000;

thread_local! {
    /// One per worker, whether or not its producer started: refusals are limited either way.
    static REPEATS: RefCell<RepeatFilter> = RefCell::new(RepeatFilter::new(REPEAT_WINDOW_MS));
}

/// Writes `kafka: <message>` to `log` unless a line like it (digits aside) was written in the
/// last window; the next one written says how many were held back.
pub fn log_limited(level: ngx_uint_t, log: *mut ngx_log_t, message: &str) {
    // SAFETY: nginx's cached time, read on the worker thread.
    let now = unsafe { ngx_current_msec } as u64;
    let verdict = REPEATS.with(|r| r.borrow_mut().admit(message, now));
    if let Verdict::Write { suppressed } = verdict {
        let line = if suppressed > 0 {
            format!("kafka: {message} (and {suppressed} more like it)")
        } else {
            format!("kafka: {message}")
        };
        // SAFETY: `log` is a valid log of the current cycle, on the worker thread.
        unsafe { write_line(level, log, line.as_bytes()) };
    }
}

/// Reports, once their window has passed, the lines that were held back.
pub fn flush_repeats() {
    // SAFETY: nginx's cached time, read on the worker thread.
    let now = unsafe { ngx_current_msec } as u64;
    for (key, count) in REPEATS.with(|r| r.borrow_mut().expire(now)) {
        let line = format!("kafka: {count} more like \"{key}\" (digits elided)");
        // SAFETY: the cycle log is valid on the worker thread.
        unsafe { write_line(NGX_LOG_WARN as ngx_uint_t, cycle_log(), line.as_bytes()) };
    }
}

/// Where a message came from: the error log of the location that accepted it (its failure
/// is logged there) and the counter set of that location and topic. Each message's opaque
/// points at one, owned by the worker's topic handle, which outlives the message.
pub struct Route {
    pub log: *mut ngx_log_t,
    pub set: Option<SetRef>,
}

/// A message's opaque: a `*const Route`, or a ticket (`worker::Ticket`) with its lowest bit
/// set.
pub type LogRef = usize;

/// One message's delivery report, borrowed from librdkafka's event.
pub struct Report<'a> {
    pub topic: Cow<'a, str>,
    pub partition: i32,
    pub key: Option<&'a [u8]>,
    pub payload: &'a [u8],
    /// `None` when the broker acknowledged the message.
    pub error: Option<String>,
    /// librdkafka's name for the error (`_MSG_TIMED_OUT`...).
    pub error_name: Option<String>,
    pub code: rdkafka::types::RDKafkaRespErr,
    /// The message's timestamp (Unix milliseconds), and its headers: read for failures only.
    pub timestamp_ms: i64,
    pub headers: Vec<(&'a [u8], Option<&'a [u8]>)>,
    /// The broker may have the message after all (it timed out in flight).
    pub possibly_delivered: bool,
    pub opaque: LogRef,
}

/// This worker's counts.
///
/// librdkafka reports only failures by default (`delivery.report.only.error`, see
/// `worker/mod.rs`): what was delivered is what was accepted, less what failed, less what
/// is still in flight.
#[derive(Default)]
pub struct Reports {
    /// Messages the producer took.
    pub accepted: u64,
    /// Messages reported as not delivered, each logged with its payload.
    pub failed: u64,
    /// Messages reported as delivered (reported only with success reports on).
    pub delivered_ok: u64,
    /// The last delivery error: its name, and when (Unix seconds).
    pub last_error: Option<(String, u64)>,
}

impl Reports {
    /// Messages delivered so far, given how many are still queued or in flight.
    pub fn delivered(&self, in_flight: u64) -> u64 {
        self.accepted
            .saturating_sub(self.failed)
            .saturating_sub(in_flight)
    }

    /// Counts a delivery report of a message from `route`.
    pub fn on_delivery(&mut self, route: &Route, report: &Report<'_>) {
        if report.error.is_none() {
            self.delivered_ok += 1;
            if let Some(set) = route.set {
                set.add(DELIVERED, 1);
            }
            return;
        }
        self.failed += 1;
        if let Some(set) = route.set {
            set.add(FAILED, 1);
        }
        let now = ngx::ffi::ngx_time() as u64;
        if let Some(name) = &report.error_name {
            match &mut self.last_error {
                Some((n, t)) if n == name => *t = now,
                last => *last = Some((name.clone(), now)),
            }
        }
    }

    /// Writes a failed message, whole, to its location's error log: with no spool (the
    /// original design), or when the spool cannot take it.
    pub fn log_failure(&mut self, route: &Route, report: &Report<'_>) {
        let line = failure_line_with(
            &report.topic,
            report.partition,
            report.key,
            &report.headers,
            report.possibly_delivered,
            report.error.as_deref().unwrap_or_default(),
            report.payload,
        );
        // SAFETY: the route's log is a location's error log, valid for the cycle.
        unsafe { write_line(NGX_LOG_ERR as ngx_uint_t, route.log, &line) };
    }

    pub fn on_log(&mut self, level: i32, facility: &str, message: &str) {
        // syslog(3) levels, as librdkafka uses them.
        let level = match level {
            0..=4 => NGX_LOG_WARN,
            5 => NGX_LOG_NOTICE,
            _ => NGX_LOG_INFO,
        };
        log_limited(
            level as ngx_uint_t,
            cycle_log(),
            &format!("librdkafka {facility}: {message}"),
        );
    }

    pub fn on_error(&mut self, fatal: bool, name: &str, reason: &str) {
        let level = if fatal { NGX_LOG_ERR } else { NGX_LOG_WARN };
        log_limited(
            level as ngx_uint_t,
            cycle_log(),
            &format!("librdkafka error {name}: {reason}"),
        );
    }
}

fn cycle_log() -> *mut ngx_log_t {
    // SAFETY: `ngx_cycle` is the current cycle on the worker thread.
    unsafe { (*ngx_cycle).log }
}
