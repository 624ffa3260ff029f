//! Responses: 204 once an event is queued, otherwise a status and a short JSON error.

use core::ptr;

use ngx::core::Status;
use ngx::ffi::{
    ngx_buf_t, ngx_chain_t, ngx_http_send_special, ngx_int_t, ngx_str_t, ngx_uint_t, time_t,
    NGX_ERROR, NGX_HTTP_LAST, NGX_HTTP_NO_CONTENT,
};
use ngx::http::Request;

/// A request that cannot become a message, and what the client is told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    MethodNotAllowed,
    EmptyBody,
    NoTopic,
    IllegalTopic,
    TopicNotAllowed,
    UnknownTopic,
    TooManyTopics,
    BadBody,
    TooLarge,
    QueueFull,
    SpoolFull,
    NotDelivered,
    AckTimeout,
    Unavailable,
    UnknownKey,
    ForbiddenOrigin,
    NoOrigin,
    RateLimited,
}

impl Rejection {
    pub fn status(self) -> ngx_uint_t {
        match self {
            Rejection::MethodNotAllowed => 405,
            Rejection::EmptyBody
            | Rejection::NoTopic
            | Rejection::IllegalTopic
            | Rejection::BadBody => 400,
            Rejection::TopicNotAllowed
            | Rejection::UnknownKey
            | Rejection::ForbiddenOrigin
            | Rejection::NoOrigin => 403,
            Rejection::RateLimited => 429,
            Rejection::UnknownTopic => 404,
            Rejection::TooLarge => 413,
            Rejection::QueueFull
            | Rejection::SpoolFull
            | Rejection::NotDelivered
            | Rejection::AckTimeout
            | Rejection::Unavailable
            | Rejection::TooManyTopics => 503,
        }
    }

    /// The response body: `{"error":"<code>","message":"<text>"}`.
    pub fn body(self) -> &'static str {
        match self {
            Rejection::MethodNotAllowed => {
                r#"{"error":"method_not_allowed","message":"use POST or PUT"}"#
            }
            Rejection::EmptyBody => r#"{"error":"empty_body","message":"the request has no body"}"#,
            Rejection::NoTopic => r#"{"error":"no_topic","message":"the request names no topic"}"#,
            Rejection::IllegalTopic => {
                r#"{"error":"invalid_topic","message":"a topic is 1-249 of [A-Za-z0-9._-]"}"#
            }
            Rejection::TopicNotAllowed => {
                r#"{"error":"topic_not_allowed","message":"this topic is not accepted here"}"#
            }
            Rejection::UnknownTopic => {
                r#"{"error":"unknown_topic","message":"the topic does not exist"}"#
            }
            Rejection::TooManyTopics => {
                r#"{"error":"too_many_topics","message":"this server takes no more new topics now"}"#
            }
            Rejection::BadBody => {
                r#"{"error":"bad_body","message":"the request body could not be read"}"#
            }
            Rejection::TooLarge => {
                r#"{"error":"too_large","message":"the event is larger than this endpoint accepts"}"#
            }
            Rejection::QueueFull => {
                r#"{"error":"busy","message":"the producer queue is full, retry later"}"#
            }
            Rejection::SpoolFull => {
                r#"{"error":"spool_full","message":"the spool is full, retry later"}"#
            }
            Rejection::NotDelivered => {
                r#"{"error":"not_delivered","message":"Kafka did not take the event, retry later"}"#
            }
            Rejection::AckTimeout => {
                r#"{"error":"ack_timeout","message":"Kafka did not acknowledge the event in time, retry later"}"#
            }
            Rejection::Unavailable => {
                r#"{"error":"unavailable","message":"events cannot be accepted now, retry later"}"#
            }
            Rejection::UnknownKey => {
                r#"{"error":"unknown_key","message":"the key is not a registered site's"}"#
            }
            Rejection::ForbiddenOrigin => {
                r#"{"error":"forbidden_origin","message":"the page is not on a domain of this key's site"}"#
            }
            Rejection::NoOrigin => {
                r#"{"error":"no_origin","message":"the request has neither Origin nor Referer"}"#
            }
            Rejection::RateLimited => {
                r#"{"error":"rate_limited","message":"the site sends more events than it may, retry later"}"#
            }
        }
    }

    /// The JSON `error` code, also the counters' `result` label.
    pub fn code(self) -> &'static str {
        match self {
            Rejection::MethodNotAllowed => "method_not_allowed",
            Rejection::EmptyBody => "empty_body",
            Rejection::NoTopic => "no_topic",
            Rejection::IllegalTopic => "invalid_topic",
            Rejection::TopicNotAllowed => "topic_not_allowed",
            Rejection::UnknownTopic => "unknown_topic",
            Rejection::TooManyTopics => "too_many_topics",
            Rejection::BadBody => "bad_body",
            Rejection::TooLarge => "too_large",
            Rejection::QueueFull => "busy",
            Rejection::SpoolFull => "spool_full",
            Rejection::NotDelivered => "not_delivered",
            Rejection::AckTimeout => "ack_timeout",
            Rejection::Unavailable => "unavailable",
            Rejection::UnknownKey => "unknown_key",
            Rejection::ForbiddenOrigin => "forbidden_origin",
            Rejection::NoOrigin => "no_origin",
            Rejection::RateLimited => "rate_limited",
        }
    }

    /// The index of `code` in `crate::metrics::RESULTS`.
    pub fn result(self) -> usize {
        let code = self.code();
        let i = crate::metrics::RESULTS
            .iter()
            .position(|r| *r == code)
            .unwrap_or(crate::metrics::RESULTS.len() - 1);
        debug_assert!(self.body().contains(&format!("\"{code}\"")));
        i
    }

    fn retry(self) -> bool {
        matches!(self.status(), 503 | 429)
    }
}

/// Sends `rejection` as the whole response. The body, if any, must have been read or discarded.
pub fn send_rejection(r: &mut Request, rejection: Rejection, retry_after: time_t) -> ngx_int_t {
    if rejection == Rejection::MethodNotAllowed && r.add_header_out("Allow", "POST, PUT").is_none()
    {
        return NGX_ERROR as ngx_int_t;
    }
    if rejection.retry()
        && r.add_header_out("Retry-After", &retry_after.to_string())
            .is_none()
    {
        return NGX_ERROR as ngx_int_t;
    }
    send_json(r, rejection.status(), rejection.body())
}

/// 204 No Content: the event is queued.
pub fn send_accepted(r: &mut Request) -> ngx_int_t {
    r.as_mut().headers_out.status = NGX_HTTP_NO_CONTENT as ngx_uint_t;
    r.set_content_length_n(0);
    let rc = r.send_header();
    // A header-only request (HEAD, or a `mirror` subrequest) is done once its header is
    // sent: a body would wait for ever in a background subrequest's postponed output.
    if rc == Status::NGX_ERROR || rc.0 > 0 || r.header_only() {
        return rc.0;
    }
    // SAFETY: a valid request on the nginx thread.
    unsafe { ngx_http_send_special(r.into(), NGX_HTTP_LAST as ngx_uint_t) }
}

const JSON: &str = "application/json";

fn send_json(r: &mut Request, status: ngx_uint_t, body: &'static str) -> ngx_int_t {
    send_static(r, status, JSON, body.as_bytes())
}

/// Sends `body`, copied into the request's pool, as the whole response.
pub fn send_bytes(
    r: &mut Request,
    status: ngx_uint_t,
    content_type: &'static str,
    body: &[u8],
) -> ngx_int_t {
    if body.is_empty() {
        return send_static(r, status, content_type, b"");
    }
    let copy = r.pool().alloc_unaligned(body.len()).cast::<u8>();
    if copy.is_null() {
        return NGX_ERROR as ngx_int_t;
    }
    // SAFETY: a fresh allocation of `body.len()` bytes from the request pool, which outlives
    // the response.
    let copy = unsafe {
        ptr::copy_nonoverlapping(body.as_ptr(), copy, body.len());
        core::slice::from_raw_parts(copy, body.len())
    };
    send_static(r, status, content_type, copy)
}

/// Sends `body`, which lives at least as long as the request, as the whole response.
fn send_static(
    r: &mut Request,
    status: ngx_uint_t,
    content_type: &'static str,
    body: &[u8],
) -> ngx_int_t {
    let main = r.is_main();
    let out = &mut r.as_mut().headers_out;
    out.status = status;
    out.content_type = ngx_str_t {
        len: content_type.len(),
        data: content_type.as_ptr().cast_mut(),
    };
    out.content_type_len = content_type.len();
    out.content_type_lowcase = ptr::null_mut();
    r.set_content_length_n(body.len());

    let rc = r.send_header();
    if rc == Status::NGX_ERROR || rc.0 > 0 || r.header_only() {
        return rc.0;
    }
    if body.is_empty() {
        // SAFETY: a valid request on the nginx thread.
        return unsafe { ngx_http_send_special(r.into(), NGX_HTTP_LAST as ngx_uint_t) };
    }
    let b = r.pool().calloc_type::<ngx_buf_t>();
    // SAFETY: a zeroed buffer from the request pool, pointing at static memory.
    let Some(b) = (unsafe { b.as_mut() }) else {
        return NGX_ERROR as ngx_int_t;
    };
    b.pos = body.as_ptr().cast_mut();
    // SAFETY: one past the end of the same static string.
    b.last = unsafe { b.pos.add(body.len()) };
    b.set_memory(1);
    b.set_last_buf(main.into());
    b.set_last_in_chain(1);
    let mut out = ngx_chain_t {
        buf: b,
        next: ptr::null_mut(),
    };
    r.output_filter(&mut out).0
}
