//! The producer's main queue, served a bounded amount per event-loop turn.
//!
//! librdkafka puts delivery reports (one event may carry thousands of messages, e.g. when
//! `message.timeout.ms` expires for a full queue), log lines and errors on the main queue.
//! Each is handled here, on the worker thread. A turn stops after `Budget` messages or
//! payload bytes; a delivery-report event that is only partly served is kept for the next
//! turn, so that a burst of failures cannot keep nginx from answering requests.

use core::ffi::{c_char, c_int, CStr};
use core::ptr;

use rdkafka::bindings as rdsys;
use rdkafka::types::RDKafkaRespErr;

use crate::delivery::Report;

/// What the served events are handed to.
pub trait Sink {
    fn delivery(&mut self, report: &Report<'_>);
    fn log(&mut self, level: i32, facility: &str, message: &str);
    fn error(&mut self, fatal: bool, name: &str, reason: &str);
    /// librdkafka's statistics, as JSON.
    fn stats(&mut self, json: &[u8]);
    /// librdkafka asks for a new OAUTHBEARER token (`kafka_msk_iam`).
    fn token_refresh(&mut self) {}
}

/// How much one turn may serve.
#[derive(Clone, Copy)]
pub struct Budget {
    pub messages: usize,
    pub bytes: usize,
}

impl Budget {
    /// What one event-loop turn serves: enough to keep up with ~100k events/s at one turn
    /// per millisecond, little enough that writing failure lines takes a few ms at most.
    pub const TURN: Budget = Budget {
        messages: 2_000,
        bytes: 2 << 20,
    };
    /// At exit, when no request waits any more.
    pub const UNBOUNDED: Budget = Budget {
        messages: usize::MAX,
        bytes: usize::MAX,
    };
}

pub struct MainQueue {
    queue: *mut rdsys::rd_kafka_queue_t,
    /// A delivery-report event whose messages are not all served yet.
    partial: *mut rdsys::rd_kafka_event_t,
}

impl MainQueue {
    /// # Safety
    /// `rk` must be a live client that outlives the returned queue.
    pub unsafe fn of(rk: *mut rdsys::rd_kafka_t) -> MainQueue {
        MainQueue {
            // SAFETY: the caller guarantees `rk`.
            queue: unsafe { rdsys::rd_kafka_queue_get_main(rk) },
            partial: ptr::null_mut(),
        }
    }

    /// Makes librdkafka write to `fd` when the queue becomes non-empty.
    pub fn notify(&self, fd: c_int) {
        static ONE: u64 = 1;
        // SAFETY: `queue` is live; librdkafka copies the payload pointer's 8 bytes per write.
        unsafe {
            rdsys::rd_kafka_queue_io_event_enable(
                self.queue,
                fd,
                ptr::addr_of!(ONE).cast(),
                size_of::<u64>(),
            )
        };
    }

    /// Serves events until the queue is empty (false) or the budget is spent (true: more).
    pub fn serve(&mut self, sink: &mut impl Sink, budget: Budget) -> bool {
        let (mut messages, mut bytes) = (0usize, 0usize);
        loop {
            if messages >= budget.messages || bytes >= budget.bytes {
                return true;
            }
            if self.partial.is_null() {
                // SAFETY: `queue` is live; a null event means the queue is empty.
                let ev = unsafe { rdsys::rd_kafka_queue_poll(self.queue, 0) };
                if ev.is_null() {
                    return false;
                }
                // SAFETY: `ev` is an event we own until destroyed.
                match unsafe { rdsys::rd_kafka_event_type(ev) } {
                    rdsys::RD_KAFKA_EVENT_DR => {
                        self.partial = ev;
                        continue;
                    }
                    rdsys::RD_KAFKA_EVENT_LOG => log_event(ev, sink),
                    rdsys::RD_KAFKA_EVENT_ERROR => error_event(ev, sink),
                    rdsys::RD_KAFKA_EVENT_OAUTHBEARER_TOKEN_REFRESH => sink.token_refresh(),
                    rdsys::RD_KAFKA_EVENT_STATS => {
                        // SAFETY: a live statistics event; the string lives as long as it.
                        let json = unsafe { rdsys::rd_kafka_event_stats(ev) };
                        if !json.is_null() {
                            // SAFETY: a NUL-terminated string of the live event.
                            sink.stats(unsafe { CStr::from_ptr(json) }.to_bytes());
                        }
                    }
                    _ => {}
                }
                messages += 1;
                // SAFETY: destroys the event served above, once.
                unsafe { rdsys::rd_kafka_event_destroy(ev) };
                continue;
            }
            // SAFETY: `partial` is a live delivery-report event.
            let m = unsafe { rdsys::rd_kafka_event_message_next(self.partial) };
            // SAFETY: a message of a live event, valid until the event is destroyed.
            let Some(m) = (unsafe { m.as_ref() }) else {
                // SAFETY: every message was served; destroying frees them.
                unsafe { rdsys::rd_kafka_event_destroy(self.partial) };
                self.partial = ptr::null_mut();
                continue;
            };
            messages += 1;
            bytes += m.len;
            sink.delivery(&report(m));
        }
    }
}

impl Drop for MainQueue {
    fn drop(&mut self) {
        // SAFETY: stops librdkafka's writes to the eventfd before the fd is closed, then
        // releases our references, once.
        unsafe {
            rdsys::rd_kafka_queue_io_event_enable(self.queue, -1, ptr::null(), 0);
            if !self.partial.is_null() {
                rdsys::rd_kafka_event_destroy(self.partial);
            }
            rdsys::rd_kafka_queue_destroy(self.queue);
        }
    }
}

fn bytes<'a>(p: *const core::ffi::c_void, len: usize) -> &'a [u8] {
    if p.is_null() || len == 0 {
        return &[];
    }
    // SAFETY: librdkafka's (pointer, length) pairs of a live message.
    unsafe { core::slice::from_raw_parts(p.cast(), len) }
}

fn text<'a>(p: *const c_char) -> std::borrow::Cow<'a, str> {
    if p.is_null() {
        return "".into();
    }
    // SAFETY: librdkafka's NUL-terminated strings, valid while their event lives.
    unsafe { CStr::from_ptr(p) }.to_string_lossy()
}

fn report(m: &rdsys::rd_kafka_message_t) -> Report<'_> {
    let failed = m.err != RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR;
    let error = failed.then(|| {
        // SAFETY: librdkafka's static error tables.
        let (name, text_) = unsafe {
            (
                rdsys::rd_kafka_err2name(m.err),
                rdsys::rd_kafka_err2str(m.err),
            )
        };
        (text(name).into_owned(), text(text_))
    });
    let (error, error_name) = match error {
        Some((name, text_)) => (Some(format!("{name} ({text_})")), Some(name)),
        None => (None, None),
    };
    let (mut timestamp_ms, mut headers, mut possibly_delivered) = (0, Vec::new(), false);
    if failed {
        // SAFETY: reads of a live message of a live event.
        unsafe {
            let mut kind = rdsys::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
            timestamp_ms = rdsys::rd_kafka_message_timestamp(m, &mut kind);
            if timestamp_ms < 0 {
                timestamp_ms = 0;
            }
            possibly_delivered = rdsys::rd_kafka_message_status(m)
                == rdsys::rd_kafka_msg_status_t::RD_KAFKA_MSG_STATUS_POSSIBLY_PERSISTED;
            headers = message_headers(m);
        }
    }
    Report {
        // SAFETY: a delivered message's topic handle is live with its event.
        topic: text(unsafe { rdsys::rd_kafka_topic_name(m.rkt) }),
        partition: m.partition,
        key: (!m.key.is_null()).then(|| bytes(m.key, m.key_len)),
        payload: bytes(m.payload, m.len),
        error,
        error_name,
        code: m.err,
        timestamp_ms,
        headers,
        possibly_delivered,
        opaque: m._private as usize,
    }
}

/// A message's headers, borrowed from it.
fn message_headers(m: &rdsys::rd_kafka_message_t) -> Vec<(&[u8], Option<&[u8]>)> {
    let mut hdrs: *mut rdsys::rd_kafka_headers_t = ptr::null_mut();
    // SAFETY: the headers stay owned by the live message.
    let err = unsafe { rdsys::rd_kafka_message_headers(ptr::from_ref(m), &mut hdrs) };
    if err != RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR || hdrs.is_null() {
        return Vec::new();
    }
    let mut out = Vec::new();
    for i in 0.. {
        let (mut name, mut val, mut size): (*const c_char, *const core::ffi::c_void, usize) =
            (ptr::null(), ptr::null(), 0);
        // SAFETY: index `i` of the message's headers; the strings live as long as it.
        let rc = unsafe { rdsys::rd_kafka_header_get_all(hdrs, i, &mut name, &mut val, &mut size) };
        if rc != RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR || name.is_null() {
            break;
        }
        // SAFETY: a NUL-terminated name of the live message.
        let name = unsafe { CStr::from_ptr(name) }.to_bytes();
        let value = (!val.is_null()).then(|| bytes(val, size));
        out.push((name, value));
    }
    out
}

fn log_event(ev: *mut rdsys::rd_kafka_event_t, sink: &mut impl Sink) {
    let (mut fac, mut msg, mut level): (*const c_char, *const c_char, c_int) =
        (ptr::null(), ptr::null(), 0);
    // SAFETY: `ev` is a live log event; the strings live as long as it.
    if unsafe { rdsys::rd_kafka_event_log(ev, &mut fac, &mut msg, &mut level) } == 0 {
        sink.log(level, text(fac).trim(), text(msg).trim());
    }
}

fn error_event(ev: *mut rdsys::rd_kafka_event_t, sink: &mut impl Sink) {
    // SAFETY: `ev` is a live error event; the strings live as long as it.
    let (fatal, name, reason) = unsafe {
        (
            rdsys::rd_kafka_event_error_is_fatal(ev) != 0,
            text(rdsys::rd_kafka_err2name(rdsys::rd_kafka_event_error(ev))),
            text(rdsys::rd_kafka_event_error_string(ev)),
        )
    };
    sink.error(fatal, &name, reason.trim());
}
