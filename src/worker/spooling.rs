//! The worker's side of `kafka_spool`: which failed messages go to the spool, which to the
//! dead-letter file, and the pace of replay and of `fsync`.

use std::collections::HashMap;

use ngx::ffi::{ngx_log_t, ngx_uint_t};
use rdkafka::types::RDKafkaRespErr;

use super::commit::Commit;
use super::topics::Topic;
use crate::conf::SpoolConf;
use crate::delivery::{log_limited, Report, Route};
use crate::log::{NGX_LOG_CRIT, NGX_LOG_ERR, NGX_LOG_WARN};
use crate::spool::files::{now_ms, Kind};
use crate::spool::format::{Record, FLAG_POSSIBLY_DELIVERED, FLAG_REPLAYED};
use crate::spool::store::{AppendError, Settings, Store};

/// How often the directory is listed (its size, files to adopt).
const SCAN_MS: u64 = 1000;
/// What one replay turn may hand to the producer at most.
pub const REPLAY_BATCH: usize = 1000;

/// What became of a failed message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kept {
    Spooled,
    Dead,
    /// The spool could not take it (full, or an error): the caller logs it whole.
    Refused,
}

pub struct Spooling {
    pub store: Store,
    dir: String,
    rate: f64,
    tokens: f64,
    refilled_at: u64,
    fsync_ms: Option<u64>,
    synced_at: u64,
    /// `fsync=batch`: durable answers wait for their batch's sync. `None` there means no
    /// eventfd could be had: durable events are then refused, never answered unsynced.
    pub batch: bool,
    pub commit: Option<Commit>,
    scanned_at: u64,
    dead_after_ms: u64,
    /// The route of replayed messages: the cycle's log, no counter set.
    pub replay_route: Box<Route>,
    /// Topic handles of replayed messages, kept while the worker lives.
    pub replay_topics: HashMap<Vec<u8>, Topic>,
    log: *mut ngx_log_t,
}

impl Spooling {
    /// `on_synced` runs when a batch was synced (`fsync=batch`).
    pub fn new(
        conf: &SpoolConf,
        pid: u32,
        on_synced: ngx::ffi::ngx_event_handler_pt,
        log: *mut ngx_log_t,
    ) -> Spooling {
        let mut store = Store::new(
            Settings {
                dir: conf.path.clone(),
                max_size: conf.max_size,
                fsync: conf.fsync.is_some(),
            },
            pid,
        );
        if let Err(e) = store.scan() {
            log_limited(
                NGX_LOG_CRIT as ngx_uint_t,
                log,
                &format!(
                    "kafka_spool \"{}\" cannot be read: {e}",
                    conf.path.display()
                ),
            );
        }
        // `nginx -t` runs as another user than the workers (`user`): say it now, not at
        // the first event.
        if let Ok(path) = std::ffi::CString::new(conf.path.as_os_str().as_encoded_bytes()) {
            // SAFETY: a NUL-terminated path; access(2) only reads it.
            if unsafe { libc::access(path.as_ptr(), libc::W_OK | libc::X_OK) } != 0 {
                let e = std::io::Error::last_os_error();
                log_limited(
                    NGX_LOG_CRIT as ngx_uint_t,
                    log,
                    &format!(
                        "kafka_spool \"{}\" is not writable by this worker: {e}",
                        conf.path.display()
                    ),
                );
            }
        }
        let commit = conf
            .fsync_batch
            .then(|| Commit::new(on_synced, log))
            .flatten();
        if conf.fsync_batch && commit.is_none() {
            log_limited(
                NGX_LOG_CRIT as ngx_uint_t,
                log,
                "kafka_spool fsync=batch: no eventfd connection, durable events are refused",
            );
        }
        let now = now_ms();
        Spooling {
            store,
            dir: conf.path.display().to_string(),
            rate: f64::from(conf.replay_rate),
            tokens: 0.0,
            refilled_at: now,
            fsync_ms: conf.fsync.map(|ms| ms as u64),
            synced_at: now,
            batch: conf.fsync_batch,
            commit,
            scanned_at: now,
            dead_after_ms: conf.dead_letter_after as u64,
            replay_route: Box::new(Route { log, set: None }),
            replay_topics: HashMap::new(),
            log,
        }
    }

    /// `fsync`'s period, if files are synced.
    pub fn fsync_ms(&self) -> Option<ngx::ffi::ngx_msec_t> {
        self.fsync_ms.map(|ms| ms as ngx::ffi::ngx_msec_t)
    }

    pub fn dir(&self) -> &str {
        &self.dir
    }

    /// The periodic part: `fsync` when due, and the directory listing.
    pub fn tick(&mut self) {
        let now = now_ms();
        if self
            .fsync_ms
            .is_some_and(|ms| now.saturating_sub(self.synced_at) >= ms)
        {
            self.synced_at = now;
            match self.commit.as_mut() {
                Some(c) => c.tick(&mut self.store),
                None => self.store.sync(),
            }
        }
        if now.saturating_sub(self.scanned_at) >= SCAN_MS {
            self.scanned_at = now;
            if let Err(e) = self.store.scan() {
                log_limited(
                    NGX_LOG_CRIT as ngx_uint_t,
                    self.log,
                    &format!("kafka_spool \"{}\" cannot be read: {e}", self.dir),
                );
            }
        }
    }

    /// How many records replay may hand out now (`replay_rate` per second).
    pub fn replay_budget(&mut self) -> usize {
        let now = now_ms();
        let elapsed = now.saturating_sub(self.refilled_at) as f64 / 1000.0;
        self.refilled_at = now;
        // At most a tenth of a second's worth saved up: no bursts after a pause.
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate / 10.0 + 1.0);
        (self.tokens as usize).min(REPLAY_BATCH)
    }

    pub fn spend(&mut self, n: usize) {
        self.tokens = (self.tokens - n as f64).max(0.0);
    }

    /// Keeps a message that was not delivered: in the dead-letter file if it can never be
    /// delivered, else in the spool for replay.
    pub fn keep(&mut self, report: &Report<'_>, replayed: bool) -> Kept {
        let mut flags = 0;
        if report.possibly_delivered {
            flags |= FLAG_POSSIBLY_DELIVERED;
        }
        if replayed {
            flags |= FLAG_REPLAYED;
        }
        let timestamp_ms = if report.timestamp_ms > 0 {
            report.timestamp_ms
        } else {
            now_ms() as i64
        };
        let reason = report.error_name.as_deref().unwrap_or_default();
        let record = Record {
            flags,
            timestamp_ms,
            reason: reason.as_bytes(),
            topic: report.topic.as_bytes(),
            key: report.key,
            headers: report.headers.clone(),
            value: report.payload,
        };
        let age = (now_ms() as i64).saturating_sub(timestamp_ms).max(0) as u64;
        if never_deliverable(report.code, age, self.dead_after_ms) {
            return match self.store.append_dead(&record) {
                Ok(()) => {
                    log_limited(
                        NGX_LOG_ERR as ngx_uint_t,
                        self.log,
                        &format!(
                            "event to \"{}\" can never be delivered ({reason}), kept in the \
                             dead-letter file of \"{}\"",
                            report.topic, self.dir
                        ),
                    );
                    Kept::Dead
                }
                Err(e) => {
                    self.refused(&e);
                    Kept::Refused
                }
            };
        }
        match self.store.append(Kind::Spool, &record) {
            Ok(_) => {
                log_limited(
                    NGX_LOG_WARN as ngx_uint_t,
                    self.log,
                    &format!(
                        "events to \"{}\" not delivered ({reason}) are spooled to \"{}\"",
                        report.topic, self.dir
                    ),
                );
                Kept::Spooled
            }
            Err(e) => {
                self.refused(&e);
                Kept::Refused
            }
        }
    }

    /// Says, at `crit` and rate-limited, that the spool refused an event.
    pub fn refused(&self, e: &AppendError) {
        log_limited(
            NGX_LOG_CRIT as ngx_uint_t,
            self.log,
            &format!("kafka_spool \"{}\" cannot take events: {e}", self.dir),
        );
    }
}

/// Errors no retry can fix, and a topic that stayed missing for longer than allowed.
fn never_deliverable(code: RDKafkaRespErr, age_ms: u64, dead_after_ms: u64) -> bool {
    use RDKafkaRespErr::*;
    match code {
        RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE
        | RD_KAFKA_RESP_ERR_INVALID_MSG_SIZE
        | RD_KAFKA_RESP_ERR_INVALID_MSG
        | RD_KAFKA_RESP_ERR_INVALID_RECORD
        | RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED
        | RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION => true,
        RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC | RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART => {
            age_ms >= dead_after_ms
        }
        _ => false,
    }
}
