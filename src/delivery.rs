//! What a delivery report means: counters, and for a failure one `[error]` line that carries
//! the whole payload, escaped so that it can be recovered and produced again.
//!
//! Threading: librdkafka hands every report, log line and error to the main queue, which only
//! the nginx worker thread polls (see `worker.rs`), so these callbacks run on that thread.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use ngx::ffi::{ngx_current_msec, ngx_cycle, ngx_log_t, ngx_uint_t};
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{DeliveryResult, ProducerContext};

use crate::failure_line::failure_line;
use crate::log::{write_line, NGX_LOG_ERR, NGX_LOG_INFO, NGX_LOG_NOTICE, NGX_LOG_WARN};
use crate::repeats::{RepeatFilter, Verdict};

/// How long identical librdkafka complaints are held back after one is written.
const REPEAT_WINDOW_MS: u64 = 10_000;

/// The producer's context: counts outcomes and logs what went wrong.
///
/// librdkafka reports only failures (`delivery.report.only.error`, see `worker.rs`): a
/// success report per message would cost the worker a callback and its share of wake-ups for
/// nothing. What was delivered is what was accepted, less what failed, less what is in flight.
pub struct DeliveryReports {
    /// Messages the producer took (`send` returned Ok).
    pub accepted: AtomicU64,
    /// Messages reported as not delivered, each logged with its payload.
    pub failed: AtomicU64,
    repeats: Mutex<RepeatFilter>,
}

impl Default for DeliveryReports {
    fn default() -> Self {
        DeliveryReports {
            accepted: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            repeats: Mutex::new(RepeatFilter::new(REPEAT_WINDOW_MS)),
        }
    }
}

/// Which error log a message's failure goes to: the one of the location that accepted it.
/// Stored as the message's opaque, a `*mut ngx_log_t` that lives as long as the cycle.
pub type LogRef = usize;

impl DeliveryReports {
    /// Messages delivered so far, given how many are still queued or in flight.
    pub fn delivered(&self, in_flight: u64) -> u64 {
        let accepted = self.accepted.load(Ordering::Relaxed);
        let failed = self.failed.load(Ordering::Relaxed);
        accepted.saturating_sub(failed).saturating_sub(in_flight)
    }

    /// Writes `message` to the cycle's error log unless it repeats a recent one.
    fn log_limited(&self, level: ngx_uint_t, message: &str) {
        // SAFETY: called on the nginx worker thread, where these globals are valid.
        let (log, now) = unsafe { ((*ngx_cycle).log, ngx_current_msec as u64) };
        let verdict = match self.repeats.lock() {
            Ok(mut f) => f.admit(message, now),
            Err(_) => Verdict::Write { suppressed: 0 },
        };
        if let Verdict::Write { suppressed } = verdict {
            let line = if suppressed > 0 {
                format!("kafka: {message} (and {suppressed} more like it)")
            } else {
                format!("kafka: {message}")
            };
            // SAFETY: the cycle log is valid on the worker thread.
            unsafe { write_line(level, log, line.as_bytes()) };
        }
    }

    /// Reports, once their window has passed, the lines that were held back.
    pub fn flush_repeats(&self) {
        // SAFETY: called on the nginx worker thread.
        let (log, now) = unsafe { ((*ngx_cycle).log, ngx_current_msec as u64) };
        let owed = match self.repeats.lock() {
            Ok(mut f) => f.expire(now),
            Err(_) => return,
        };
        for (key, count) in owed {
            let line = format!("kafka: {count} more like \"{key}\" (digits elided)");
            // SAFETY: the cycle log is valid on the worker thread.
            unsafe { write_line(NGX_LOG_WARN as ngx_uint_t, log, line.as_bytes()) };
        }
    }
}

impl ClientContext for DeliveryReports {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        let level = match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error
            | RDKafkaLogLevel::Warning => NGX_LOG_WARN,
            RDKafkaLogLevel::Notice => NGX_LOG_NOTICE,
            RDKafkaLogLevel::Info | RDKafkaLogLevel::Debug => NGX_LOG_INFO,
        };
        self.log_limited(level as ngx_uint_t, &format!("librdkafka {fac}: {message}"));
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let fatal = matches!(
            error.rdkafka_error_code(),
            Some(rdkafka::types::RDKafkaErrorCode::Fatal)
        );
        let level = if fatal { NGX_LOG_ERR } else { NGX_LOG_WARN };
        self.log_limited(level as ngx_uint_t, &format!("{error}: {reason}"));
    }
}

impl ProducerContext for DeliveryReports {
    type DeliveryOpaque = LogRef;

    fn delivery(&self, result: &DeliveryResult<'_>, log: LogRef) {
        match result {
            // Only when an operator turned success reports back on: nothing to do.
            Ok(_) => {}
            Err((error, message)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                let line = failure_line(
                    message.topic(),
                    message.partition(),
                    message.key(),
                    &error.to_string(),
                    message.payload().unwrap_or_default(),
                );
                // SAFETY: `log` is a location's error log, valid for the cycle, set by the
                // request handler on this thread.
                unsafe { write_line(NGX_LOG_ERR as ngx_uint_t, log as *mut ngx_log_t, &line) };
            }
        }
    }
}
