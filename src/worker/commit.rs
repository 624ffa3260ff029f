//! `kafka_spool ... fsync=batch`: group commit. A `durable` request is answered once the
//! journal record of its event is on storage, not only in the page cache.
//!
//! Requests join the open batch; at most one batch is being synced at a time (by the
//! store's syncer thread), so that every request that arrives during a sync shares the
//! next one. The syncer reports through a channel and wakes the worker through an eventfd.

use std::collections::VecDeque;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::{mpsc, Arc};

use ngx::ffi::{ngx_event_handler_pt, ngx_log_t};

use super::acks::{Ack, Outcome};
use super::wakeup::Wakeup;
use crate::spool::store::{Committed, Done, Store};

pub struct Commit {
    /// Watched by nginx; the syncer writes to `signal`, a duplicate of its eventfd.
    _wakeup: Wakeup,
    signal: Arc<OwnedFd>,
    tx: mpsc::Sender<Committed>,
    rx: mpsc::Receiver<Committed>,
    /// The batch requests join now, and whether the one before it is being synced.
    open: u64,
    syncing: bool,
    waiting: VecDeque<(u64, Ack)>,
    log: *mut ngx_log_t,
}

impl Commit {
    /// `handler` runs when a batch was synced; it calls `committed`.
    pub fn new(handler: ngx_event_handler_pt, log: *mut ngx_log_t) -> Option<Commit> {
        let wakeup = Wakeup::new(handler, log)?;
        // SAFETY: duplicates the eventfd, so that the syncer thread can write to it for as
        // long as it holds a job, whatever the worker closes meanwhile.
        let fd = unsafe { libc::fcntl(wakeup.fd(), libc::F_DUPFD_CLOEXEC, 0) };
        if fd == -1 {
            return None;
        }
        // SAFETY: a descriptor just created, owned by nothing else.
        let signal = Arc::new(unsafe { OwnedFd::from_raw_fd(fd) });
        let (tx, rx) = mpsc::channel();
        Some(Commit {
            _wakeup: wakeup,
            signal,
            tx,
            rx,
            open: 1,
            syncing: false,
            waiting: VecDeque::new(),
            log,
        })
    }

    /// The request of `ack` waits for the records appended so far to be synced.
    pub fn wait(&mut self, ack: Ack, store: &mut Store) {
        self.waiting.push_back((self.open, ack));
        if !self.syncing {
            self.start(store);
        }
    }

    /// Syncs what was appended since the last sync, if nothing is being synced: for the
    /// records that no request waits for (the spool's), every `fsync` period.
    pub fn tick(&mut self, store: &mut Store) {
        if !self.syncing && store.dirty() {
            self.start(store);
        }
    }

    fn start(&mut self, store: &mut Store) {
        self.syncing = true;
        store.commit(Done {
            batch: self.open,
            tx: self.tx.clone(),
            signal: self.signal.clone(),
        });
        self.open += 1;
    }

    /// Takes the syncer's reports: the requests of each synced batch are answered (204, or
    /// 503 when a sync failed), and the next batch starts if requests wait for it.
    pub fn committed(&mut self, store: &mut Store, answers: &mut Vec<(Ack, Outcome)>) {
        while let Ok(c) = self.rx.try_recv() {
            self.syncing = false;
            if !c.ok {
                crate::delivery::log_limited(
                    crate::log::NGX_LOG_CRIT as ngx::ffi::ngx_uint_t,
                    self.log,
                    &format!(
                        "kafka_spool \"{}\": a sync failed, durable events are refused",
                        store.dir().display()
                    ),
                );
            }
            while self.waiting.front().is_some_and(|(b, _)| *b <= c.batch) {
                let Some((_, ack)) = self.waiting.pop_front() else {
                    break;
                };
                let outcome = if c.ok {
                    Outcome::Acked
                } else {
                    Outcome::NotStored
                };
                answers.push((ack, outcome));
            }
        }
        if !self.syncing && !self.waiting.is_empty() {
            self.start(store);
        }
    }
}
