//! `kafka_site_stats`: a tenant reads its own site's counts, with its stats secret as a
//! bearer token (`Authorization: Bearer SECRET`), never with its public key.
//!
//! No or an unknown secret: `401`. A secret asking for another site (`?site=ID`): `403`.

use ngx::core::Status;
use ngx::ffi::{
    ngx_http_request_t, ngx_int_t, ngx_uint_t, NGX_HTTP_GET, NGX_HTTP_HEAD,
    NGX_HTTP_INTERNAL_SERVER_ERROR, NGX_HTTP_NOT_ALLOWED,
};
use ngx::http::{HttpModuleMainConf, Request};

use crate::http;
use crate::metrics::{CounterSet, RESULTS};
use crate::Module;

const JSON: &str = "application/json";

/// The content handler installed by `kafka_site_stats`.
///
/// # Safety
/// Called by nginx with a valid request.
pub unsafe extern "C" fn site_stats_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx passes a valid request, used only on this thread.
    let req = unsafe { Request::from_ngx_http_request(r) };
    if req.as_ref().method & (NGX_HTTP_GET | NGX_HTTP_HEAD) as ngx_uint_t == 0 {
        return NGX_HTTP_NOT_ALLOWED as ngx_int_t;
    }
    let rc = req.discard_request_body();
    if rc != Status::NGX_OK {
        return rc.0;
    }
    let Some(mcf) = Module::main_conf(req.as_ref()) else {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    };
    let Some(sites) = mcf.sites.as_deref() else {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    };
    let secret = super::header_in(req, "Authorization").and_then(|v| bearer(v));
    let Some((_, site)) = secret.and_then(|s| sites.by_secret(s)) else {
        if req
            .add_header_out("WWW-Authenticate", "Bearer realm=\"kafka_site_stats\"")
            .is_none()
        {
            return ngx::ffi::NGX_ERROR as ngx_int_t;
        }
        let body = r#"{"error":"unauthorized","message":"send the site's stats secret as a bearer token"}"#;
        return http::send_bytes(req, 401, JSON, body.as_bytes());
    };
    if let Some(asked) = super::arg(req, b"site") {
        if asked != site.id.as_bytes() {
            let body = r#"{"error":"forbidden","message":"this secret is not that site's"}"#;
            return http::send_bytes(req, 403, JSON, body.as_bytes());
        }
    }
    let snapshot = crate::counters::snapshot(mcf.metrics_zone);
    let set = snapshot
        .as_ref()
        .and_then(|s| s.sites.iter().find(|c| c.topic == site.id));
    let body = render(&site.id, set);
    if req.add_header_out("Cache-Control", "no-store").is_none() {
        return ngx::ffi::NGX_ERROR as ngx_int_t;
    }
    http::send_bytes(req, 200, JSON, body.as_bytes())
}

/// The token of `Bearer TOKEN`.
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, token) = value.split_at(value.iter().position(|&b| b == b' ')?);
    scheme
        .eq_ignore_ascii_case(b"Bearer")
        .then(|| token.trim_ascii())
        .filter(|t| !t.is_empty())
}

/// `{"site":"shop","events":{"accepted":N,"forbidden_origin":N,...},"accepted_bytes":N}`:
/// `accepted` always, the other results when not zero.
fn render(id: &str, set: Option<&CounterSet>) -> String {
    let mut events = serde_json::Map::new();
    for (i, name) in RESULTS.iter().enumerate() {
        let n = set.map_or(0, |s| s.requests[i]);
        if n > 0 || i == crate::metrics::ACCEPTED {
            events.insert((*name).to_string(), n.into());
        }
    }
    serde_json::json!({
        "site": id,
        "events": events,
        "accepted_bytes": set.map_or(0, |s| s.bytes),
    })
    .to_string()
}
