//! `kafka_collect`: events from other people's web pages. A request names its site's key
//! (`?key=`); its page (the `Origin`, else the `Referer`) must be on one of the site's
//! domains. `POST` carries one event or a batch, `GET` is the image pixel (its query string
//! is the event), `OPTIONS` the CORS preflight. See docs/sites.md and the README.

mod stats;

use core::ptr;

use ngx::ffi::{
    ngx_http_arg, ngx_http_finalize_request, ngx_http_read_client_request_body, ngx_http_request_t,
    ngx_int_t, ngx_str_t, ngx_uint_t, NGX_DONE, NGX_ERROR, NGX_HTTP_GET, NGX_HTTP_HEAD,
    NGX_HTTP_INTERNAL_SERVER_ERROR, NGX_HTTP_NO_CONTENT, NGX_HTTP_OPTIONS, NGX_HTTP_POST,
    NGX_HTTP_SPECIAL_RESPONSE,
};
use ngx::http::{
    HttpModule, HttpModuleLocationConf, HttpModuleMainConf, NgxHttpCoreModule, Request,
};

use crate::conf::{Dnt, LocationConf, MainConf};
use crate::http::{self, Rejection, RequestCtx};
use crate::metrics::zone::BYTES;
use crate::metrics::{ACCEPTED, RESULTS};
use crate::record::{check_topic, TopicError};
use crate::sites::events::{self, BodyError, Limits};
use crate::sites::privacy;
use crate::sites::registry::Site;
use crate::worker::{self, Produced, SendError};
use crate::Module;

pub use stats::site_stats_handler;

/// A transparent 1x1 GIF: the pixel's answer.
const GIF: &[u8] = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;";
/// How long a browser may cache a preflight's answer.
const PREFLIGHT_MAX_AGE: &str = "86400";

/// The content handler installed by `kafka_collect`.
///
/// # Safety
/// Called by nginx with a valid request.
pub unsafe extern "C" fn collect_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx passes a valid request, used only on this thread.
    let req = unsafe { Request::from_ngx_http_request(r) };
    let (Some(lcf), Some(mcf)) = (
        Module::location_conf(req.as_ref()),
        Module::main_conf(req.as_ref()),
    ) else {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    };
    if RequestCtx::attach(req).is_none() || req.add_header_out("Vary", "Origin").is_none() {
        return NGX_ERROR as ngx_int_t;
    }

    let method = req.as_ref().method as u32;
    if method & (NGX_HTTP_POST | NGX_HTTP_GET | NGX_HTTP_HEAD | NGX_HTTP_OPTIONS) == 0 {
        return early(req, lcf, None, Rejection::MethodNotAllowed);
    }
    let site = match find_site(req, mcf) {
        Ok(site) => site,
        Err(rejection) => return early(req, lcf, None, rejection),
    };
    if let Err(rejection) = check_page(req, site) {
        return early(req, lcf, Some(site), rejection);
    }
    if let Some(origin) = header_in(req, "Origin") {
        let origin = String::from_utf8_lossy(origin).into_owned();
        if req
            .add_header_out("Access-Control-Allow-Origin", &origin)
            .is_none()
        {
            return NGX_ERROR as ngx_int_t;
        }
    }
    if method == NGX_HTTP_OPTIONS {
        return preflight(req);
    }
    if lcf.dnt() == Dnt::Drop && no_tracking(req) {
        let rc = req.discard_request_body();
        if rc != ngx::core::Status::NGX_OK {
            return rc.0;
        }
        count_site(site, dnt_result(), 1, 0);
        http::record(req, dnt_result(), 0);
        return answer(req, method);
    }
    if method != NGX_HTTP_POST {
        let rc = req.discard_request_body();
        if rc != ngx::core::Status::NGX_OK {
            return rc.0;
        }
        let query = req.as_ref().args.as_bytes().to_vec();
        let event = events::from_query(&query);
        return queue(req, lcf, mcf, site, &[&event]);
    }
    if req.as_ref().headers_in.content_length_n == 0 {
        return early(req, lcf, Some(site), Rejection::EmptyBody);
    }
    // SAFETY: standard body reading; nginx calls `body_read` when the body is complete.
    let rc = unsafe { ngx_http_read_client_request_body(r, Some(body_read)) };
    if rc >= NGX_HTTP_SPECIAL_RESPONSE as ngx_int_t {
        return match http::reading_failed(rc) {
            Some(rejection) => {
                req.as_mut().set_keepalive(0);
                refuse(req, lcf, Some(site), rejection, 1)
            }
            None => rc,
        };
    }
    NGX_DONE as ngx_int_t
}

unsafe extern "C" fn body_read(r: *mut ngx_http_request_t) {
    resume(r);
}

/// Queues the events of a request whose body was read (again, for a request that waited
/// for its topic to be looked up), and ends the request unless it waits.
pub fn resume(r: *mut ngx_http_request_t) {
    // SAFETY: nginx (or the worker, for a parked request) passes a live request.
    let req = unsafe { Request::from_ngx_http_request(r) };
    let rc = queue_body(req);
    if rc == NGX_DONE as ngx_int_t {
        return;
    }
    // SAFETY: ends the request that the handler kept open with NGX_DONE.
    unsafe { ngx_http_finalize_request(r, rc) };
}

fn queue_body(req: &mut Request) -> ngx_int_t {
    let (Some(lcf), Some(mcf)) = (
        Module::location_conf(req.as_ref()),
        Module::main_conf(req.as_ref()),
    ) else {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    };
    let Ok(site) = find_site(req, mcf) else {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    };
    // SAFETY: the body is complete when this runs; it lives as long as the request.
    let Some(rb) = (unsafe { req.as_ref().request_body.as_ref() }) else {
        return refuse(req, lcf, Some(site), Rejection::EmptyBody, 1);
    };
    let body = match http::collect_body(rb) {
        Ok(b) => b,
        Err(e) => {
            log_at!(
                crate::log::NGX_LOG_CRIT,
                req.log(),
                "kafka: request body could not be read: {e}"
            );
            return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
        }
    };
    let limits = Limits {
        max_event: lcf.max_event_size,
        max_events: lcf.max_events,
    };
    match events::parse(&body, limits) {
        Ok(list) => queue(req, lcf, mcf, site, &list),
        Err(e) => refuse_body(req, lcf, site, &e),
    }
}

/// Checks the site's rate, then queues every event, in order, or none.
fn queue(
    req: &mut Request,
    lcf: &LocationConf,
    mcf: &MainConf,
    site: &Site,
    list: &[&[u8]],
) -> ngx_int_t {
    let n = list.len() as u64;
    let set = crate::counters::site_set(site.id.as_bytes());
    // A request that waited for its topic was counted against the rate already.
    let resumed = req
        .get_module_ctx::<RequestCtx>(Module::module())
        .is_some_and(|c| c.topic.len > 0);
    if let (Some(rate), Some(set), false) = (site.rate, set, resumed) {
        // SAFETY: nginx's cached time, read on the worker thread.
        let now = unsafe { (*ngx::ffi::ngx_cached_time).sec } as u64;
        if !set.take(n, u64::from(rate), now) {
            return refuse(req, lcf, Some(site), Rejection::RateLimited, n);
        }
    }
    let topic = match topic(req, lcf, site) {
        Ok(t) => t,
        Err(rejection) => return refuse(req, lcf, Some(site), rejection, n),
    };
    if !worker::has_room(n) {
        return refuse(req, lcf, Some(site), Rejection::QueueFull, n);
    }
    let Some(headers) = Headers::of(req, lcf, mcf, site) else {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    };
    let fixed_key = match lcf
        .key()
        .map(|cv| crate::http::evaluate(req, cv, lcf.key_var))
    {
        Some(Some(k)) if !k.is_empty() => Some(k.to_vec()),
        Some(Some(_)) | None => None,
        Some(None) => return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t,
    };
    let Some(clcf) = NgxHttpCoreModule::location_conf(req.as_ref()) else {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    };
    let from = worker::From {
        location: lcf,
        log: clcf.error_log,
    };
    let raw: *mut ngx_http_request_t = ptr::from_ref(req.as_ref()).cast_mut();
    let pairs = headers.pairs();
    let mut bytes = 0;
    for (i, value) in list.iter().enumerate() {
        let key = match &site.key_field {
            Some(field) => events::key_field(value, field),
            None => fixed_key.clone(),
        };
        let event = worker::Event {
            topic: topic.as_bytes(),
            key: key.as_deref(),
            value,
            headers: &pairs,
        };
        match worker::produce(&from, &event, raw) {
            Ok(Produced::Queued | Produced::Spooled) => {
                bytes += value.len() + key.map_or(0, |k| k.len());
            }
            // Only the first event can wait for its topic: nothing was queued yet.
            Ok(Produced::Parked) if i == 0 => return NGX_DONE as ngx_int_t,
            Ok(Produced::Parked | Produced::Waiting) => {
                return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t
            }
            Err(e) if i == 0 => return refuse(req, lcf, Some(site), rejection(&e), n),
            Err(e) => {
                // The queue filled up between the check and this event (its bytes): the
                // events before it are taken, and the client is told which.
                let left = n - i as u64;
                count_site(site, ACCEPTED, i as u64, bytes);
                count_site(site, rejection(&e).result(), left, 0);
                return partial(req, lcf, rejection(&e), i);
            }
        }
    }
    count_site(site, ACCEPTED, n, bytes);
    http::record(req, ACCEPTED, bytes);
    answer(req, req.as_ref().method as u32)
}

/// The topic of the site's events: its own, or the location's `kafka_topic`.
fn topic(req: &mut Request, lcf: &LocationConf, site: &Site) -> Result<String, Rejection> {
    let name = match &site.topic {
        Some(t) => t.clone(),
        None => match lcf
            .topic()
            .map(|cv| crate::http::evaluate(req, cv, lcf.topic_var))
        {
            Some(Some(t)) => String::from_utf8_lossy(t).into_owned(),
            _ => String::new(),
        },
    };
    if let Err(e) = check_topic(name.as_bytes(), lcf.allowed_topics.as_deref()) {
        return Err(match e {
            TopicError::Missing => Rejection::NoTopic,
            TopicError::Illegal => Rejection::IllegalTopic,
            TopicError::NotAllowed => Rejection::TopicNotAllowed,
        });
    }
    // Kept for `$kafka_topic`, in the request's pool.
    let copy = req.pool().alloc_unaligned(name.len()).cast::<u8>();
    if let Some(ctx) = req.get_module_ctx::<RequestCtx>(Module::module()) {
        if !copy.is_null() {
            let ctx = ptr::from_ref(ctx).cast_mut();
            // SAFETY: a fresh allocation of `name.len()` bytes; the context is this request's.
            unsafe {
                ptr::copy_nonoverlapping(name.as_ptr(), copy, name.len());
                (*ctx).topic = ngx_str_t {
                    len: name.len(),
                    data: copy,
                };
            }
        }
    }
    Ok(name)
}

fn rejection(e: &SendError) -> Rejection {
    match e {
        SendError::QueueFull => Rejection::QueueFull,
        SendError::TooLarge => Rejection::TooLarge,
        SendError::UnknownTopic => Rejection::UnknownTopic,
        SendError::TooManyTopics | SendError::TooManyLookups => Rejection::TooManyTopics,
        SendError::SpoolFull => Rejection::SpoolFull,
        SendError::NoProducer | SendError::NoToken | SendError::Kafka(_) => Rejection::Unavailable,
    }
}

/// The record headers of a request's events: the defaults, then `kafka_header`s (one of the
/// same name replaces a default; an empty value removes it).
struct Headers {
    list: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Headers {
    fn of(req: &Request, lcf: &LocationConf, mcf: &MainConf, site: &Site) -> Option<Headers> {
        let anonymous = lcf.dnt() == Dnt::Anonymize && no_tracking(req);
        let mut list: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(6);
        list.push((b"site".to_vec(), site.id.as_bytes().to_vec()));
        if !anonymous {
            // SAFETY: the request's connection, whose address text `realip` may have set.
            let addr = unsafe { (*req.connection()).addr_text.as_bytes() };
            if let Some(ip) = privacy::client_ip(addr, lcf.client_ip(), &mcf.ip_secret) {
                list.push((b"client_ip".to_vec(), ip));
            }
            if let Some(ua) = req.user_agent() {
                list.push((b"user_agent".to_vec(), ua.as_bytes().to_vec()));
            }
        }
        // SAFETY: nginx's cached time, read on the worker thread.
        let now = unsafe { &*ngx::ffi::ngx_cached_time };
        let ms = now.sec as u64 * 1000 + now.msec as u64;
        list.push((b"received_ms".to_vec(), ms.to_string().into_bytes()));
        if let Some(id) = lcf.request_id().and_then(|cv| req.get_complex_value(cv)) {
            list.push((b"request_id".to_vec(), id.as_bytes().to_vec()));
        }
        for h in lcf.headers.iter().flatten() {
            let value = req.get_complex_value(h.value())?;
            list.retain(|(n, _)| *n != h.name);
            if !value.is_empty() {
                list.push((h.name.clone(), value.as_bytes().to_vec()));
            }
        }
        Some(Headers { list })
    }

    fn pairs(&self) -> Vec<(&[u8], Option<&[u8]>)> {
        self.list
            .iter()
            .map(|(n, v)| (n.as_slice(), Some(v.as_slice())))
            .collect()
    }
}

/// The site of the request's `?key=`.
fn find_site<'a>(req: &Request, mcf: &'a MainConf) -> Result<&'a Site, Rejection> {
    let key = arg(req, b"key").ok_or(Rejection::UnknownKey)?;
    let sites = mcf.sites.as_deref().ok_or(Rejection::UnknownKey)?;
    sites
        .by_key(key)
        .map(|(_, site)| site)
        .ok_or(Rejection::UnknownKey)
}

/// The site's key named by a request, for `$kafka_site`.
pub fn site_of(req: &Request) -> Option<&'static str> {
    let mcf = Module::main_conf(req.as_ref())?;
    let site = find_site(req, mcf).ok()?;
    // SAFETY: the registry lives as long as the configuration, longer than any request.
    Some(unsafe { &*ptr::from_ref(site.id.as_str()) })
}

/// Whether the page is one of the site's: the `Origin`'s host, else the `Referer`'s.
fn check_page(req: &Request, site: &Site) -> Result<(), Rejection> {
    use crate::sites::registry::{origin_host, referer_host};
    let host = match header_in(req, "Origin") {
        Some(origin) => origin_host(origin),
        None => {
            // SAFETY: null, or the request's Referer header.
            let referer = unsafe { req.as_ref().headers_in.referer.as_ref() };
            match referer {
                Some(h) => referer_host(h.value.as_bytes()),
                None => return Err(Rejection::NoOrigin),
            }
        }
    };
    match host {
        Some(h) if site.allows_host(h.as_bytes()) => Ok(()),
        _ => Err(Rejection::ForbiddenOrigin),
    }
}

fn header_in<'a>(req: &'a Request, name: &str) -> Option<&'a [u8]> {
    req.headers_in_iterator()
        .find(|(k, _)| k.as_bytes().eq_ignore_ascii_case(name.as_bytes()))
        .map(|(_, v)| v.as_bytes())
}

/// `DNT: 1` or `Sec-GPC: 1`.
fn no_tracking(req: &Request) -> bool {
    header_in(req, "DNT") == Some(b"1") || header_in(req, "Sec-GPC") == Some(b"1")
}

fn arg<'a>(req: &'a Request, name: &[u8]) -> Option<&'a [u8]> {
    let mut value = ngx_str_t::default();
    let raw: *mut ngx_http_request_t = ptr::from_ref(req.as_ref()).cast_mut();
    // SAFETY: reads the request's arguments; `value` points into them.
    let rc = unsafe { ngx_http_arg(raw, name.as_ptr().cast_mut(), name.len(), &mut value) };
    if rc != ngx::ffi::NGX_OK as ngx_int_t || value.len == 0 {
        return None;
    }
    // SAFETY: `value` points into the request's arguments, which live as long as it.
    Some(unsafe { core::slice::from_raw_parts(value.data, value.len) })
}

fn dnt_result() -> usize {
    RESULTS.iter().position(|r| *r == "dnt").unwrap_or(0)
}

/// Counts `n` events of `site` under `result`.
fn count_site(site: &Site, result: usize, n: u64, bytes: usize) {
    if let Some(set) = crate::counters::site_set(site.id.as_bytes()) {
        set.add(result, n);
        if bytes > 0 {
            set.add(BYTES, bytes as u64);
        }
    }
}

/// The preflight's answer: the origin was checked, the method and the content type are
/// allowed, and browsers may cache the answer.
fn preflight(req: &mut Request) -> ngx_int_t {
    let rc = req.discard_request_body();
    if rc != ngx::core::Status::NGX_OK {
        return rc.0;
    }
    for (name, value) in [
        ("Access-Control-Allow-Methods", "POST, GET, OPTIONS"),
        ("Access-Control-Allow-Headers", "Content-Type"),
        ("Access-Control-Max-Age", PREFLIGHT_MAX_AGE),
    ] {
        if req.add_header_out(name, value).is_none() {
            return NGX_ERROR as ngx_int_t;
        }
    }
    req.as_mut().headers_out.status = NGX_HTTP_NO_CONTENT as ngx_uint_t;
    http::send_accepted(req)
}

/// The answer to taken events: 204, or the pixel for a GET.
fn answer(req: &mut Request, method: u32) -> ngx_int_t {
    if method == NGX_HTTP_POST {
        return http::send_accepted(req);
    }
    for (name, value) in [
        (
            "Cache-Control",
            "no-store, no-cache, must-revalidate, max-age=0",
        ),
        ("Pragma", "no-cache"),
    ] {
        if req.add_header_out(name, value).is_none() {
            return NGX_ERROR as ngx_int_t;
        }
    }
    http::send_bytes(req, 200, "image/gif", GIF)
}

/// Refuses before the body is read.
fn early(req: &mut Request, lcf: &LocationConf, site: Option<&Site>, r: Rejection) -> ngx_int_t {
    let rc = req.discard_request_body();
    if rc != ngx::core::Status::NGX_OK {
        return rc.0;
    }
    if r == Rejection::MethodNotAllowed
        && req.add_header_out("Allow", "GET, POST, OPTIONS").is_none()
    {
        return NGX_ERROR as ngx_int_t;
    }
    refuse(req, lcf, site, r, 1)
}

/// Counts `n` refused events (under the location, and the site if known) and answers.
fn refuse(
    req: &mut Request,
    lcf: &LocationConf,
    site: Option<&Site>,
    rejection: Rejection,
    n: u64,
) -> ngx_int_t {
    crate::counters::refused(&lcf.scope, rejection.result());
    if let Some(site) = site {
        count_site(site, rejection.result(), n, 0);
    }
    http::record(req, rejection.result(), 0);
    let retry_after = match rejection {
        Rejection::RateLimited => 1,
        _ => worker::retry_after(lcf.retry_after),
    };
    http::send_rejection(req, rejection, retry_after)
}

/// A body refused whole: `400` naming the events that are not JSON objects, `413` for
/// events or batches too large.
fn refuse_body(req: &mut Request, lcf: &LocationConf, site: &Site, e: &BodyError) -> ngx_int_t {
    let (rejection, status, body) = match e {
        BodyError::Empty => return refuse(req, lcf, Some(site), Rejection::EmptyBody, 1),
        BodyError::Malformed => (
            invalid_event(),
            400,
            r#"{"error":"invalid_event","message":"the body is not JSON, a JSON array or NDJSON"}"#
                .to_string(),
        ),
        BodyError::Invalid(list) => (
            invalid_event(),
            400,
            format!(
                r#"{{"error":"invalid_event","message":"events must be JSON objects; nothing was taken","events":{list:?}}}"#
            ),
        ),
        BodyError::TooLarge(list) => (
            Rejection::TooLarge.result(),
            413,
            format!(
                r#"{{"error":"too_large","message":"events larger than {} bytes; nothing was taken","events":{list:?}}}"#,
                lcf.max_event_size
            ),
        ),
        BodyError::TooMany(n) => (
            too_many_events(),
            413,
            format!(
                r#"{{"error":"too_many_events","message":"{n} events in one request, at most {} are taken; nothing was taken"}}"#,
                lcf.max_events
            ),
        ),
    };
    crate::counters::refused(&lcf.scope, rejection);
    count_site(site, rejection, 1, 0);
    http::record(req, rejection, 0);
    http::send_bytes(req, status, "application/json", body.as_bytes())
}

/// Part of a batch was taken: `503` with the number of events taken (the first `taken`),
/// so that the client sends the rest again.
fn partial(req: &mut Request, lcf: &LocationConf, rejection: Rejection, taken: usize) -> ngx_int_t {
    crate::counters::refused(&lcf.scope, rejection.result());
    http::record(req, rejection.result(), 0);
    let retry = worker::retry_after(lcf.retry_after).to_string();
    if req.add_header_out("Retry-After", &retry).is_none() {
        return NGX_ERROR as ngx_int_t;
    }
    let body = format!(
        r#"{{"error":"{}","message":"the first {taken} events were taken, send the others again","taken":{taken}}}"#,
        rejection.code()
    );
    http::send_bytes(req, rejection.status(), "application/json", body.as_bytes())
}

fn invalid_event() -> usize {
    RESULTS
        .iter()
        .position(|r| *r == "invalid_event")
        .unwrap_or(0)
}

fn too_many_events() -> usize {
    RESULTS
        .iter()
        .position(|r| *r == "too_many_events")
        .unwrap_or(0)
}
