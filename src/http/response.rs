//! Responses: 204 once an event is queued, otherwise a status and a short JSON error.

use core::ptr;

use ngx::ffi::{
    ngx_buf_t, ngx_chain_t, ngx_http_output_filter, ngx_http_request_t, ngx_http_send_header,
    ngx_http_send_special, ngx_int_t, ngx_list_push, ngx_pcalloc, ngx_str_t, ngx_table_elt_t,
    ngx_uint_t, time_t, NGX_ERROR, NGX_HTTP_LAST, NGX_HTTP_NO_CONTENT, NGX_OK,
};

/// A request that cannot become a message, and what the client is told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    MethodNotAllowed,
    EmptyBody,
    NoTopic,
    IllegalTopic,
    TopicNotAllowed,
    UnknownTopic,
    BadBody,
    TooLarge,
    QueueFull,
    Unavailable,
}

impl Rejection {
    pub fn status(self) -> ngx_uint_t {
        match self {
            Rejection::MethodNotAllowed => 405,
            Rejection::EmptyBody
            | Rejection::NoTopic
            | Rejection::IllegalTopic
            | Rejection::BadBody => 400,
            Rejection::TopicNotAllowed => 403,
            Rejection::UnknownTopic => 404,
            Rejection::TooLarge => 413,
            Rejection::QueueFull | Rejection::Unavailable => 503,
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
            Rejection::BadBody => {
                r#"{"error":"bad_body","message":"the request body could not be read"}"#
            }
            Rejection::TooLarge => {
                r#"{"error":"too_large","message":"the event is larger than this endpoint accepts"}"#
            }
            Rejection::QueueFull => {
                r#"{"error":"busy","message":"the producer queue is full, retry later"}"#
            }
            Rejection::Unavailable => {
                r#"{"error":"unavailable","message":"events cannot be accepted now, retry later"}"#
            }
        }
    }

    fn retry(self) -> bool {
        self.status() == 503
    }
}

/// Sends `rejection` as the whole response. The body, if any, must have been read or discarded.
pub fn send_rejection(
    r: &mut ngx_http_request_t,
    rejection: Rejection,
    retry_after: time_t,
) -> ngx_int_t {
    let retry_after = retry_after.to_string();
    let mut headers: Vec<(&'static str, &str)> = Vec::new();
    if rejection == Rejection::MethodNotAllowed {
        headers.push(("Allow", "POST, PUT"));
    }
    if rejection.retry() {
        headers.push(("Retry-After", &retry_after));
    }
    send_json(r, rejection.status(), rejection.body(), &headers)
}

/// 204 No Content: the event is queued.
pub fn send_accepted(r: &mut ngx_http_request_t) -> ngx_int_t {
    r.headers_out.status = NGX_HTTP_NO_CONTENT as ngx_uint_t;
    r.headers_out.content_length_n = 0;
    // SAFETY: a valid request on the nginx thread.
    let rc = unsafe { ngx_http_send_header(r) };
    if rc == NGX_ERROR as ngx_int_t || rc > NGX_OK as ngx_int_t || r.header_only() != 0 {
        return rc;
    }
    // SAFETY: as above.
    unsafe { ngx_http_send_special(r, NGX_HTTP_LAST as ngx_uint_t) }
}

fn send_json(
    r: &mut ngx_http_request_t,
    status: ngx_uint_t,
    body: &'static str,
    headers: &[(&'static str, &str)],
) -> ngx_int_t {
    const JSON: &str = "application/json";
    r.headers_out.status = status;
    r.headers_out.content_type = static_str(JSON);
    r.headers_out.content_type_len = JSON.len();
    r.headers_out.content_type_lowcase = ptr::null_mut();
    r.headers_out.content_length_n = body.len() as _;
    for (name, value) in headers {
        if add_header(r, name, value).is_none() {
            return NGX_ERROR as ngx_int_t;
        }
    }

    // SAFETY: a valid request on the nginx thread.
    let rc = unsafe { ngx_http_send_header(r) };
    if rc == NGX_ERROR as ngx_int_t || rc > NGX_OK as ngx_int_t || r.header_only() != 0 {
        return rc;
    }
    // SAFETY: the buffer is allocated from the request pool and points at static memory.
    unsafe {
        let b = ngx_pcalloc(r.pool, size_of::<ngx_buf_t>()).cast::<ngx_buf_t>();
        if b.is_null() {
            return NGX_ERROR as ngx_int_t;
        }
        (*b).pos = body.as_ptr().cast_mut();
        (*b).last = (*b).pos.add(body.len());
        (*b).set_memory(1);
        (*b).set_last_buf(if ptr::eq(r, r.main) { 1 } else { 0 });
        (*b).set_last_in_chain(1);
        let mut out = ngx_chain_t {
            buf: b,
            next: ptr::null_mut(),
        };
        ngx_http_output_filter(r, &mut out)
    }
}

fn static_str(s: &'static str) -> ngx_str_t {
    ngx_str_t {
        len: s.len(),
        data: s.as_ptr().cast_mut(),
    }
}

fn add_header(r: &mut ngx_http_request_t, name: &'static str, value: &str) -> Option<()> {
    // SAFETY: pushes onto the request's own header list and copies the value into its pool.
    unsafe {
        let h: *mut ngx_table_elt_t = ngx_list_push(&mut r.headers_out.headers).cast();
        let h = h.as_mut()?;
        // Zeroed first: `lowcase_key`, and `next` where nginx (1.23+) has it, stay null.
        ptr::write_bytes(h as *mut ngx_table_elt_t, 0, 1);
        let data = ngx::ffi::ngx_pnalloc(r.pool, value.len()).cast::<u8>();
        if data.is_null() {
            return None;
        }
        ptr::copy_nonoverlapping(value.as_ptr(), data, value.len());
        h.hash = 1;
        h.key = ngx_str_t {
            len: name.len(),
            data: name.as_ptr().cast_mut(),
        };
        h.value = ngx_str_t {
            len: value.len(),
            data,
        };
    }
    Some(())
}
