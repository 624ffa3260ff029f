//! The `kafka_ingest` content handler: checks the request, reads the body, queues the event.

use ngx::ffi::{
    ngx_http_finalize_request, ngx_http_read_client_request_body, ngx_http_request_t, ngx_int_t,
    ngx_str_t, ngx_uint_t, NGX_DONE, NGX_ERROR, NGX_HTTP_BAD_REQUEST,
    NGX_HTTP_INTERNAL_SERVER_ERROR, NGX_HTTP_POST, NGX_HTTP_PUT, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
    NGX_HTTP_SPECIAL_RESPONSE,
};
use ngx::http::{HttpModule, HttpModuleLocationConf, NgxHttpCoreModule, Request};

use core::ptr;

use super::body;
use super::response::{send_accepted, send_rejection, Rejection};
use super::value::evaluate;
use crate::conf::LocationConf;
use crate::metrics::ACCEPTED;
use crate::record::{check_topic, TopicError};
use crate::worker::{self, Produced, SendError};
use crate::Module;

/// What the handler keeps for the request: the topic it checked, and for the `$kafka_*`
/// variables, what became of the event.
#[derive(Clone, Copy)]
pub struct RequestCtx {
    pub topic: ngx_str_t,
    pub key: ngx_str_t,
    /// `crate::metrics::RESULTS` index plus one; 0 until the Kafka step ends.
    pub result: usize,
    /// Value and key bytes queued.
    pub bytes: usize,
}

impl RequestCtx {
    /// A fresh, empty context in the request's pool, set as the module's for the request;
    /// `None` when the pool has no memory.
    pub fn attach(r: &mut Request) -> Option<*mut RequestCtx> {
        let ctx = r.pool().alloc_type::<RequestCtx>();
        if ctx.is_null() {
            return None;
        }
        // SAFETY: a fresh allocation of the right size and alignment from the request pool.
        unsafe {
            ctx.write(RequestCtx {
                topic: ngx_str_t::default(),
                key: ngx_str_t::default(),
                result: 0,
                bytes: 0,
            })
        };
        r.set_module_ctx(ctx.cast(), Module::module());
        Some(ctx)
    }
}

/// The content handler installed by `kafka_ingest`.
///
/// # Safety
/// Called by nginx with a valid request.
pub unsafe extern "C" fn ingest_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx passes a valid request, used only on this thread.
    let r = unsafe { Request::from_ngx_http_request(r) };
    let Some(lcf) = Module::location_conf(r.as_ref()) else {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    };
    let Some(ctx) = RequestCtx::attach(r) else {
        return NGX_ERROR as ngx_int_t;
    };

    if r.as_ref().method & (NGX_HTTP_POST | NGX_HTTP_PUT) as ngx_uint_t == 0 {
        return reject_early(r, lcf, Rejection::MethodNotAllowed);
    }

    // The evaluated topic lives as long as the request: in its pool, or where the variable
    // keeps it (a header's value in the request's header buffer).
    let topic = match lcf.topic().map(|cv| evaluate(r, cv, lcf.topic_var)) {
        Some(Some(t)) => ngx_str_t {
            len: t.len(),
            data: t.as_ptr().cast_mut(),
        },
        Some(None) => return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t,
        None => ngx_str_t::default(),
    };
    // SAFETY: the context set above, in the request pool.
    unsafe { (*ctx).topic = topic };
    if let Err(e) = check_topic(topic.as_bytes(), lcf.allowed_topics.as_deref()) {
        let rejection = match e {
            TopicError::Missing => Rejection::NoTopic,
            TopicError::Illegal => Rejection::IllegalTopic,
            TopicError::NotAllowed => Rejection::TopicNotAllowed,
        };
        info!(
            r.log(),
            "kafka: rejected topic \"{}\"",
            String::from_utf8_lossy(topic.as_bytes()).escape_debug()
        );
        return reject_early(r, lcf, rejection);
    }
    if r.as_ref().headers_in.content_length_n == 0 {
        return reject_early(r, lcf, Rejection::EmptyBody);
    }

    // SAFETY: standard body reading; nginx calls `body_read` when the body is complete
    // (at once for a subrequest, whose body is its parent's).
    let rc = unsafe { ngx_http_read_client_request_body(r.into(), Some(body_read)) };
    if rc >= NGX_HTTP_SPECIAL_RESPONSE as ngx_int_t {
        return match reading_failed(rc) {
            Some(rejection) => {
                r.as_mut().set_keepalive(0);
                refuse(r, lcf, rejection)
            }
            None => rc,
        };
    }
    NGX_DONE as ngx_int_t
}

/// Statuses nginx's body reader returns that the client should see as JSON.
pub fn reading_failed(rc: ngx_int_t) -> Option<Rejection> {
    match rc as u32 {
        NGX_HTTP_REQUEST_ENTITY_TOO_LARGE => Some(Rejection::TooLarge),
        NGX_HTTP_BAD_REQUEST => Some(Rejection::BadBody),
        _ => None,
    }
}

/// Rejects before the body is read: the body is discarded so the connection can be reused.
fn reject_early(r: &mut Request, lcf: &LocationConf, rejection: Rejection) -> ngx_int_t {
    let rc = r.discard_request_body();
    if rc != ngx::core::Status::NGX_OK {
        return rc.0;
    }
    refuse(r, lcf, rejection)
}

/// Records what became of the event, for the `$kafka_*` variables.
pub fn record(r: &Request, result: usize, bytes: usize) {
    // The context is there for every request the handler has seen; a copy is changed.
    let ctx = r.get_module_ctx::<RequestCtx>(Module::module());
    if let Some(ctx) = ctx {
        let ctx = ptr::from_ref(ctx).cast_mut();
        // SAFETY: the context lives in the request pool and is only used on this thread.
        unsafe {
            (*ctx).result = result + 1;
            (*ctx).bytes = bytes;
        }
    }
}

/// Counts and records a refusal before a topic was known to exist, and answers it.
fn refuse(r: &mut Request, lcf: &LocationConf, rejection: Rejection) -> ngx_int_t {
    crate::counters::refused(&lcf.scope, rejection.result());
    record(r, rejection.result(), 0);
    send_rejection(r, rejection, worker::retry_after(lcf.retry_after))
}

/// Answers a request of an `acked` location once its event's delivery report came (of a
/// `durable` one with `fsync=batch`, once its record was synced), or the wait ended;
/// returns what the request is finalized with.
pub fn answer_acked(r: *mut ngx_http_request_t, outcome: worker::Outcome) -> ngx_int_t {
    // SAFETY: a live request, kept open until now (see `worker::acks`).
    let r = unsafe { Request::from_ngx_http_request(r) };
    let Some(lcf) = Module::location_conf(r.as_ref()) else {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    };
    let Some(ctx) = r.get_module_ctx::<RequestCtx>(Module::module()).copied() else {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    };
    // Counted now, under the location and topic, as accepted or refused.
    let set = crate::counters::topic_set(&lcf.scope, ctx.topic.as_bytes());
    let rejection = match outcome {
        worker::Outcome::Acked => {
            if let Some(set) = set {
                set.add(ACCEPTED, 1);
                set.add(crate::metrics::zone::BYTES, ctx.bytes as u64);
            }
            return send_accepted(r);
        }
        worker::Outcome::NotDelivered => Rejection::NotDelivered,
        worker::Outcome::TimedOut => Rejection::AckTimeout,
        worker::Outcome::NotStored => Rejection::SpoolFull,
    };
    if let Some(set) = set {
        set.add(rejection.result(), 1);
    }
    record(r, rejection.result(), 0);
    send_rejection(r, rejection, worker::retry_after(lcf.retry_after))
}

unsafe extern "C" fn body_read(r: *mut ngx_http_request_t) {
    resume(r);
}

/// Queues the event of a request whose body was read, and ends the request, unless it
/// must wait for a topic lookup: then the worker calls this again when the answer comes.
pub fn resume(r: *mut ngx_http_request_t) {
    // SAFETY: nginx (or the worker, for a parked request) passes a live request.
    let req = unsafe { Request::from_ngx_http_request(r) };
    if Module::location_conf(req.as_ref()).is_some_and(|l| l.collect_at.is_some()) {
        crate::collect::resume(r);
        return;
    }
    let rc = queue_event(req);
    if rc == NGX_DONE as ngx_int_t {
        return;
    }
    // SAFETY: ends the request that `ingest_handler` kept open with NGX_DONE.
    unsafe { ngx_http_finalize_request(r, rc) };
}

fn queue_event(r: &mut Request) -> ngx_int_t {
    // Kept for the worker, which parks the request while it looks its topic up.
    let raw: *mut ngx_http_request_t = (r.as_ref() as *const ngx_http_request_t).cast_mut();
    let Some(lcf) = Module::location_conf(r.as_ref()) else {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    };
    let Some(topic) = r
        .get_module_ctx::<RequestCtx>(Module::module())
        .map(|c| c.topic)
    else {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    };

    // SAFETY: the request body is complete when this runs; it lives as long as the request.
    let Some(rb) = (unsafe { r.as_ref().request_body.as_ref() }) else {
        return refuse(r, lcf, Rejection::EmptyBody);
    };
    let body = match body::collect(rb) {
        Ok(b) => b,
        Err(e) => {
            log_at!(
                crate::log::NGX_LOG_CRIT,
                r.log(),
                "kafka: request body could not be read: {e}"
            );
            return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
        }
    };
    if body.is_empty() {
        return refuse(r, lcf, Rejection::EmptyBody);
    }

    let value = lcf.value_format().value(&body);
    let key = match lcf.key().map(|cv| evaluate(r, cv, lcf.key_var)) {
        Some(Some(k)) if !k.is_empty() => Some(k),
        Some(Some(_)) | None => None,
        Some(None) => return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t,
    };
    if let Some(k) = key {
        let ctx = r.get_module_ctx::<RequestCtx>(Module::module());
        if let Some(ctx) = ctx {
            let ctx = ptr::from_ref(ctx).cast_mut();
            // SAFETY: the context is only used on this thread; the key lives in the pool.
            unsafe {
                (*ctx).key = ngx_str_t {
                    len: k.len(),
                    data: k.as_ptr().cast_mut(),
                }
            };
        }
    }
    let Some(clcf) = NgxHttpCoreModule::location_conf(r.as_ref()) else {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    };
    // `kafka_header`s, evaluated in the request pool; an empty value adds no header.
    let mut headers: Vec<(&[u8], Option<&[u8]>)> = Vec::new();
    for h in lcf.headers.iter().flatten() {
        match r.get_complex_value(h.value()) {
            Some(v) if v.is_empty() => {}
            Some(v) => headers.push((&h.name, Some(v.as_bytes()))),
            None => return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t,
        }
    }
    let topic = topic.as_bytes();
    let from = worker::From {
        location: lcf,
        log: clcf.error_log,
    };
    let event = worker::Event {
        topic,
        key,
        value: &value,
        headers: &headers,
    };
    match worker::produce(&from, &event, raw) {
        Ok(Produced::Queued | Produced::Spooled) => {
            record(r, ACCEPTED, value.len() + key.map_or(0, <[u8]>::len));
            send_accepted(r)
        }
        Ok(Produced::Waiting) => {
            record(r, ACCEPTED, value.len() + key.map_or(0, <[u8]>::len));
            // A client that goes away while it waits ends the request (and the wait).
            // SAFETY: a live request; nginx's own handler for a request that waits.
            unsafe {
                (*raw).read_event_handler = Some(ngx::ffi::ngx_http_test_reading);
                (*raw).write_event_handler = Some(ngx::ffi::ngx_http_request_empty_handler);
            }
            NGX_DONE as ngx_int_t
        }
        Ok(Produced::Parked) => NGX_DONE as ngx_int_t,
        Err(SendError::UnknownTopic) => {
            let topic = String::from_utf8_lossy(topic);
            info!(r.log(), "kafka: topic \"{topic}\" does not exist");
            refuse(r, lcf, Rejection::UnknownTopic)
        }
        Err(e) => {
            let rejection = match e {
                SendError::QueueFull => Rejection::QueueFull,
                SendError::TooLarge => Rejection::TooLarge,
                SendError::UnknownTopic => Rejection::UnknownTopic,
                SendError::TooManyTopics | SendError::TooManyLookups => Rejection::TooManyTopics,
                SendError::SpoolFull => Rejection::SpoolFull,
                SendError::NoProducer | SendError::NoToken | SendError::Kafka(_) => {
                    Rejection::Unavailable
                }
            };
            // One line per refused request would flood the log while the queue is full. The
            // topic is named only where topics are known to the worker (and so bounded).
            let line = match e {
                SendError::TooManyTopics | SendError::TooManyLookups => {
                    format!("event refused: {e}")
                }
                _ => format!(
                    "event to \"{}\" refused: {e}",
                    String::from_utf8_lossy(topic)
                ),
            };
            crate::delivery::log_limited(crate::log::NGX_LOG_WARN as ngx_uint_t, r.log(), &line);
            // The worker counted refusals of a topic it knows, under that topic.
            if matches!(e, SendError::QueueFull | SendError::TooLarge) {
                record(r, rejection.result(), 0);
                send_rejection(r, rejection, worker::retry_after(lcf.retry_after))
            } else {
                refuse(r, lcf, rejection)
            }
        }
    }
}
