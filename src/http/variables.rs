//! The `$kafka_*` variables, for `access_log`, `map` and friends:
//!
//! - `$kafka_result`: `accepted`, or the error code the client got (not found before the
//!   Kafka step ends, or outside an ingest location);
//! - `$kafka_topic`: the request's topic; before the content phase (`limit_req`, `map` in a
//!   rewrite) it is evaluated from `kafka_topic` on the spot;
//! - `$kafka_key`: the message key, if one was set;
//! - `$kafka_bytes`: the value and key bytes queued, `0` when refused;
//! - `$kafka_site`: the id of the site whose key the request names (`?key=`, `kafka_sites`),
//!   known from the start of the request (for `limit_req_zone`, `map`).

use ngx::ffi::{
    ngx_conf_t, ngx_http_add_variable, ngx_http_request_t, ngx_http_variable_value_t, ngx_int_t,
    ngx_str_t, ngx_uint_t, NGX_ERROR, NGX_HTTP_VAR_NOCACHEABLE, NGX_OK,
};
use ngx::http::{HttpModule, HttpModuleLocationConf, Request};
use ngx::ngx_string;

use super::handler::RequestCtx;
use crate::metrics::RESULTS;
use crate::Module;

type Getter = unsafe extern "C" fn(
    *mut ngx_http_request_t,
    *mut ngx_http_variable_value_t,
    usize,
) -> ngx_int_t;

/// Registers the variables; the module's `preconfiguration`.
pub fn add_variables(cf: &mut ngx_conf_t) -> ngx_int_t {
    let vars: [(ngx_str_t, Getter); 5] = [
        (ngx_string!("kafka_result"), get_result),
        (ngx_string!("kafka_topic"), get_topic),
        (ngx_string!("kafka_key"), get_key),
        (ngx_string!("kafka_bytes"), get_bytes),
        (ngx_string!("kafka_site"), get_site),
    ];
    for (mut name, get) in vars {
        // SAFETY: called while parsing; `name` points at static text, which nginx keeps.
        let v =
            unsafe { ngx_http_add_variable(cf, &mut name, NGX_HTTP_VAR_NOCACHEABLE as ngx_uint_t) };
        // SAFETY: null, or a variable of the configuration being parsed.
        let Some(v) = (unsafe { v.as_mut() }) else {
            return NGX_ERROR as ngx_int_t;
        };
        v.get_handler = Some(get);
    }
    NGX_OK as ngx_int_t
}

/// Sets `v` to `bytes`, which must live as long as the request.
fn found(v: &mut ngx_http_variable_value_t, bytes: &[u8]) -> ngx_int_t {
    v.set_len(bytes.len() as u32);
    v.data = bytes.as_ptr().cast_mut();
    v.set_valid(1);
    v.set_no_cacheable(0);
    v.set_not_found(0);
    NGX_OK as ngx_int_t
}

fn not_found(v: &mut ngx_http_variable_value_t) -> ngx_int_t {
    v.set_not_found(1);
    NGX_OK as ngx_int_t
}

/// The request and its context, if the ingest handler has seen it.
///
/// # Safety
/// `r` and `v` are what nginx passes to a variable's getter.
unsafe fn parts<'a>(
    r: *mut ngx_http_request_t,
    v: *mut ngx_http_variable_value_t,
) -> (
    &'a Request,
    &'a mut ngx_http_variable_value_t,
    Option<&'a RequestCtx>,
) {
    // SAFETY: the caller passes nginx's valid request and value.
    let (r, v) = unsafe { (Request::from_ngx_http_request(r), &mut *v) };
    let ctx = r.get_module_ctx::<RequestCtx>(Module::module());
    (r, v, ctx)
}

unsafe extern "C" fn get_result(
    r: *mut ngx_http_request_t,
    v: *mut ngx_http_variable_value_t,
    _: usize,
) -> ngx_int_t {
    // SAFETY: nginx's arguments.
    let (_, v, ctx) = unsafe { parts(r, v) };
    match ctx.and_then(|c| c.result.checked_sub(1)) {
        Some(i) => found(v, RESULTS[i].as_bytes()),
        None => not_found(v),
    }
}

unsafe extern "C" fn get_topic(
    r: *mut ngx_http_request_t,
    v: *mut ngx_http_variable_value_t,
    _: usize,
) -> ngx_int_t {
    // SAFETY: nginx's arguments.
    let (r, v, ctx) = unsafe { parts(r, v) };
    if let Some(ctx) = ctx {
        // SAFETY: the topic was evaluated into the request pool.
        return found(v, unsafe { slice(&ctx.topic) });
    }
    let Some(cv) = Module::location_conf(r.as_ref()).and_then(|l| l.topic()) else {
        return not_found(v);
    };
    match r.get_complex_value(cv) {
        Some(t) => found(v, t.as_bytes()),
        None => NGX_ERROR as ngx_int_t,
    }
}

unsafe extern "C" fn get_key(
    r: *mut ngx_http_request_t,
    v: *mut ngx_http_variable_value_t,
    _: usize,
) -> ngx_int_t {
    // SAFETY: nginx's arguments.
    let (_, v, ctx) = unsafe { parts(r, v) };
    match ctx {
        // SAFETY: the key was evaluated into the request pool.
        Some(ctx) => found(v, unsafe { slice(&ctx.key) }),
        None => not_found(v),
    }
}

unsafe extern "C" fn get_bytes(
    r: *mut ngx_http_request_t,
    v: *mut ngx_http_variable_value_t,
    _: usize,
) -> ngx_int_t {
    // SAFETY: nginx's arguments.
    let (r, v, ctx) = unsafe { parts(r, v) };
    let Some(ctx) = ctx.filter(|c| c.result > 0) else {
        return not_found(v);
    };
    let text = ctx.bytes.to_string();
    let p = r.pool().alloc_unaligned(text.len()).cast::<u8>();
    if p.is_null() {
        return NGX_ERROR as ngx_int_t;
    }
    // SAFETY: a fresh allocation of `text.len()` bytes from the request pool.
    let copy = unsafe {
        core::ptr::copy_nonoverlapping(text.as_ptr(), p, text.len());
        core::slice::from_raw_parts(p, text.len())
    };
    found(v, copy)
}

/// # Safety
/// `s` is empty, or points at `len` bytes that live as long as the request.
unsafe fn slice(s: &ngx_str_t) -> &[u8] {
    if s.len == 0 || s.data.is_null() {
        return &[];
    }
    // SAFETY: the caller guarantees the bytes.
    unsafe { core::slice::from_raw_parts(s.data, s.len) }
}

unsafe extern "C" fn get_site(
    r: *mut ngx_http_request_t,
    v: *mut ngx_http_variable_value_t,
    _: usize,
) -> ngx_int_t {
    // SAFETY: nginx passes its request and value.
    let (r, v, _) = unsafe { parts(r, v) };
    match crate::collect::site_of(r) {
        Some(id) => found(v, id.as_bytes()),
        None => not_found(v),
    }
}
