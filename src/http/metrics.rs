//! The `kafka_metrics` endpoint (every worker's counters and gauges, from the shared zone)
//! and `kafka_ready` (whether the worker that answers can take events).

use ngx::core::Status;
use ngx::ffi::{
    ngx_http_request_t, ngx_int_t, ngx_uint_t, NGX_HTTP_GET, NGX_HTTP_HEAD,
    NGX_HTTP_INTERNAL_SERVER_ERROR, NGX_HTTP_NOT_ALLOWED, NGX_HTTP_OK,
    NGX_HTTP_SERVICE_UNAVAILABLE,
};
use ngx::http::{HttpModuleLocationConf, HttpModuleMainConf, Request};

use super::response::send_bytes;
use crate::conf::{METRICS_JSON, METRICS_PROMETHEUS};
use crate::metrics::render;
use crate::Module;

const JSON: &str = "application/json";

/// Answers only GET and HEAD, after discarding any body.
fn read_only(r: &mut Request) -> Option<ngx_int_t> {
    if r.as_ref().method & (NGX_HTTP_GET | NGX_HTTP_HEAD) as ngx_uint_t == 0 {
        return Some(NGX_HTTP_NOT_ALLOWED as ngx_int_t);
    }
    let rc = r.discard_request_body();
    (rc != Status::NGX_OK).then_some(rc.0)
}

/// The format a request asks for with `?format=json` or `?format=prometheus`, if any.
fn asked_format(r: &Request) -> Option<ngx_uint_t> {
    let args = r.as_ref().args.as_bytes();
    args.split(|&b| b == b'&')
        .find_map(|a| a.strip_prefix(b"format="))
        .and_then(|f| match f {
            b"json" => Some(METRICS_JSON),
            b"prometheus" => Some(METRICS_PROMETHEUS),
            _ => None,
        })
}

/// The content handler installed by `kafka_metrics`.
///
/// # Safety
/// Called by nginx with a valid request.
pub unsafe extern "C" fn metrics_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx passes a valid request, used only on this thread.
    let r = unsafe { Request::from_ngx_http_request(r) };
    if let Some(rc) = read_only(r) {
        return rc;
    }
    let (Some(lcf), Some(mcf)) = (
        Module::location_conf(r.as_ref()),
        Module::main_conf(r.as_ref()),
    ) else {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    };
    let Some(snapshot) = crate::counters::snapshot(mcf.metrics_zone) else {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    };
    let mut out = Vec::with_capacity(64 * 1024);
    let content_type = if asked_format(r).unwrap_or(lcf.metrics_format) == METRICS_JSON {
        render::json(&snapshot, &mut out);
        JSON
    } else {
        render::prometheus(&snapshot, &mut out);
        render::PROMETHEUS_CONTENT_TYPE
    };
    send_bytes(r, NGX_HTTP_OK as ngx_uint_t, content_type, &out)
}

/// The content handler installed by `kafka_ready`: 200 when this worker's producer has a
/// broker connection up and the fixed topics exist, else 503 with the reason.
///
/// # Safety
/// Called by nginx with a valid request.
pub unsafe extern "C" fn ready_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx passes a valid request, used only on this thread.
    let r = unsafe { Request::from_ngx_http_request(r) };
    if let Some(rc) = read_only(r) {
        return rc;
    }
    match crate::worker::readiness() {
        Ok(()) => send_bytes(r, NGX_HTTP_OK as ngx_uint_t, JSON, br#"{"ready":true}"#),
        Err((reason, message)) => {
            let body = serde_json::json!({"ready": false, "reason": reason, "message": message});
            send_bytes(
                r,
                NGX_HTTP_SERVICE_UNAVAILABLE as ngx_uint_t,
                JSON,
                body.to_string().as_bytes(),
            )
        }
    }
}
