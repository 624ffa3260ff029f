//! The `kafka_ingest` content handler: checks the request, reads the body, queues the event.

use core::ptr;

use ngx::ffi::{
    ngx_http_complex_value, ngx_http_complex_value_t, ngx_http_discard_request_body,
    ngx_http_finalize_request, ngx_http_read_client_request_body, ngx_http_request_t, ngx_int_t,
    ngx_pcalloc, ngx_str_t, NGX_DONE, NGX_ERROR, NGX_HTTP_BAD_REQUEST,
    NGX_HTTP_INTERNAL_SERVER_ERROR, NGX_HTTP_POST, NGX_HTTP_PUT, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
    NGX_HTTP_SPECIAL_RESPONSE, NGX_OK,
};
use ngx::http::{HttpModule, HttpModuleLocationConf, NgxHttpCoreModule};

use super::body;
use super::response::{send_accepted, send_rejection, Rejection};
use crate::conf::LocationConf;
use crate::record::{check_topic, TopicError};
use crate::worker::{self, SendError};
use crate::Module;

/// What the handler keeps between the request line and the body: the topic it checked.
#[derive(Clone, Copy)]
struct RequestCtx {
    topic: ngx_str_t,
}

/// The content handler installed by `kafka_ingest`.
///
/// # Safety
/// Called by nginx with a valid request.
pub unsafe extern "C" fn ingest_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx passes a valid request, used only on this thread.
    let r = unsafe { &mut *r };
    let Some(lcf) = Module::location_conf(r) else {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    };

    if r.method & (NGX_HTTP_POST | NGX_HTTP_PUT) as usize == 0 {
        return reject_early(r, lcf, Rejection::MethodNotAllowed);
    }

    let Some(topic) = evaluate(r, lcf.topic) else {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    };
    if let Err(e) = check_topic(bytes(&topic), lcf.allowed_topics.as_deref()) {
        let rejection = match e {
            TopicError::Missing => Rejection::NoTopic,
            TopicError::Illegal => Rejection::IllegalTopic,
            TopicError::NotAllowed => Rejection::TopicNotAllowed,
        };
        crate::info!(
            r.connection_log(),
            "kafka: rejected topic \"{}\"",
            String::from_utf8_lossy(bytes(&topic))
        );
        return reject_early(r, lcf, rejection);
    }
    if r.headers_in.content_length_n == 0 {
        return reject_early(r, lcf, Rejection::EmptyBody);
    }

    // SAFETY: allocated from the request pool, which outlives the body read.
    let ctx = unsafe { ngx_pcalloc(r.pool, size_of::<RequestCtx>()).cast::<RequestCtx>() };
    if ctx.is_null() {
        return NGX_ERROR as ngx_int_t;
    }
    // SAFETY: `ctx` is a fresh allocation of the right size; `r.ctx` has a slot per module.
    unsafe {
        ctx.write(RequestCtx { topic });
        *r.ctx.add(Module::module().ctx_index) = ctx.cast();
    }

    // SAFETY: standard body reading; nginx calls `body_read` when the body is complete.
    let rc = unsafe { ngx_http_read_client_request_body(r, Some(body_read)) };
    if rc >= NGX_HTTP_SPECIAL_RESPONSE as ngx_int_t {
        return match reading_failed(rc) {
            Some(rejection) => {
                r.set_keepalive(0);
                send_rejection(r, rejection, lcf.retry_after)
            }
            None => rc,
        };
    }
    NGX_DONE as ngx_int_t
}

/// Statuses nginx's body reader returns that the client should see as JSON.
fn reading_failed(rc: ngx_int_t) -> Option<Rejection> {
    match rc as u32 {
        NGX_HTTP_REQUEST_ENTITY_TOO_LARGE => Some(Rejection::TooLarge),
        NGX_HTTP_BAD_REQUEST => Some(Rejection::BadBody),
        _ => None,
    }
}

/// Rejects before the body is read: the body is discarded so the connection can be reused.
fn reject_early(r: &mut ngx_http_request_t, lcf: &LocationConf, rejection: Rejection) -> ngx_int_t {
    // SAFETY: a valid request in its content phase.
    let rc = unsafe { ngx_http_discard_request_body(r) };
    if rc != NGX_OK as ngx_int_t {
        return rc;
    }
    send_rejection(r, rejection, lcf.retry_after)
}

unsafe extern "C" fn body_read(r: *mut ngx_http_request_t) {
    // SAFETY: nginx passes the request whose body was read.
    let r = unsafe { &mut *r };
    let rc = queue_event(r);
    // SAFETY: ends the request that `ingest_handler` kept open with NGX_DONE.
    unsafe { ngx_http_finalize_request(r, rc) };
}

fn queue_event(r: &mut ngx_http_request_t) -> ngx_int_t {
    let Some(lcf) = Module::location_conf(r) else {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    };
    // SAFETY: set by `ingest_handler` before the body was read.
    let Some(ctx) = (unsafe {
        (*r.ctx.add(Module::module().ctx_index))
            .cast::<RequestCtx>()
            .as_ref()
    }) else {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    };
    let topic = ctx.topic;

    // SAFETY: the request body is complete when this runs.
    let Some(rb) = (unsafe { r.request_body.as_ref() }) else {
        return send_rejection(r, Rejection::EmptyBody, lcf.retry_after);
    };
    let body = match body::collect(rb) {
        Ok(b) => b,
        Err(e) => {
            crate::log_at!(
                crate::log::NGX_LOG_CRIT,
                r.connection_log(),
                "kafka: request body could not be read: {e}"
            );
            return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
        }
    };
    if body.is_empty() {
        return send_rejection(r, Rejection::EmptyBody, lcf.retry_after);
    }

    let value = lcf.value_format().value(&body);
    let key = match lcf.key.is_null() {
        true => None,
        false => match evaluate(r, lcf.key) {
            Some(k) if k.len > 0 => Some(k),
            Some(_) => None,
            None => return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t,
        },
    };
    let Some(clcf) = NgxHttpCoreModule::location_conf(r) else {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    };
    // Topics were checked to be ASCII.
    let topic = std::str::from_utf8(bytes(&topic)).unwrap_or_default();
    match worker::send(topic, key.as_ref().map(bytes), &value, clcf.error_log) {
        Ok(()) => send_accepted(r),
        Err(e) => {
            let rejection = match e {
                SendError::QueueFull => Rejection::QueueFull,
                SendError::TooLarge => Rejection::TooLarge,
                SendError::UnknownTopic => Rejection::UnknownTopic,
                SendError::NoProducer | SendError::Kafka(_) => Rejection::Unavailable,
            };
            crate::warn!(
                r.connection_log(),
                "kafka: event to \"{topic}\" refused: {e}"
            );
            send_rejection(r, rejection, lcf.retry_after)
        }
    }
}

/// Evaluates a complex value for `r`; `None` on allocation failure.
fn evaluate(r: &mut ngx_http_request_t, cv: *mut ngx_http_complex_value_t) -> Option<ngx_str_t> {
    if cv.is_null() {
        return Some(ngx_str_t {
            len: 0,
            data: ptr::null_mut(),
        });
    }
    let mut out = ngx_str_t {
        len: 0,
        data: ptr::null_mut(),
    };
    // SAFETY: `cv` was compiled at configuration time; the result lives in the request pool.
    let rc = unsafe { ngx_http_complex_value(r, cv, &mut out) };
    (rc == NGX_OK as ngx_int_t).then_some(out)
}

fn bytes(s: &ngx_str_t) -> &[u8] {
    if s.len == 0 || s.data.is_null() {
        return &[];
    }
    // SAFETY: a string produced by nginx for this request.
    unsafe { std::slice::from_raw_parts(s.data, s.len) }
}

trait ConnectionLog {
    fn connection_log(&self) -> *mut ngx::ffi::ngx_log_t;
}

impl ConnectionLog for ngx_http_request_t {
    fn connection_log(&self) -> *mut ngx::ffi::ngx_log_t {
        // SAFETY: every request has a live connection.
        unsafe { (*self.connection).log }
    }
}
