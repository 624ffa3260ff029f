//! The shared memory zone the counters live in (`kafka_metrics_zone`), as nginx provides it:
//! added while the configuration is parsed, mapped by the master before it forks workers,
//! and handed over to the next configuration on reload when its size is unchanged (as
//! `stub_status`'s counters are), so the counters survive `nginx -s reload`.
//!
//! nginx lays a slab pool over every zone; the whole zone is one allocation from it, laid
//! out by `crate::metrics::zone`.

use core::ffi::c_void;
use core::ptr;

use ngx::ffi::{
    ngx_conf_t, ngx_int_t, ngx_pagesize, ngx_shared_memory_add, ngx_shm_zone_t, ngx_slab_alloc,
    ngx_slab_pool_t, ngx_str_t, NGX_ERROR, NGX_LOG_EMERG, NGX_OK,
};

use crate::metrics::zone::Zone;
use crate::Module;
use ngx::http::HttpModule;

/// The zone's name, as `nginx -T` and error messages show it.
pub const NAME: &str = "kafka_metrics";

/// Adds the zone to the configuration being parsed.
pub fn add(cf: &mut ngx_conf_t, size: usize) -> Option<*mut ngx_shm_zone_t> {
    let mut name = ngx_str_t {
        len: NAME.len(),
        data: NAME.as_ptr().cast_mut(),
    };
    let tag = ptr::from_ref(Module::module()).cast_mut().cast::<c_void>();
    // SAFETY: called while parsing; nginx copies nothing but keeps `name` pointing at our
    // static string, which lives as long as the module.
    let zone = unsafe { ngx_shared_memory_add(cf, &mut name, size, tag) };
    // SAFETY: null, or a zone of the cycle being configured.
    let z = unsafe { zone.as_mut() }?;
    z.init = Some(init);
    Some(zone)
}

/// nginx's zone initialisation: in the master, once the memory is mapped. `data` is the
/// previous configuration's zone data when nginx reuses its memory.
extern "C" fn init(shm_zone: *mut ngx_shm_zone_t, data: *mut c_void) -> ngx_int_t {
    // SAFETY: nginx passes the zone it initialises, mapped.
    let z = unsafe { &mut *shm_zone };
    if !data.is_null() {
        // SAFETY: the previous configuration laid a zone out there, in the same memory.
        if unsafe { Zone::reuse(data.cast()) }.is_some() {
            z.data = data;
            return NGX_OK as ngx_int_t;
        }
    }
    // SAFETY: nginx put an initialised slab pool at the start of every zone.
    let pool = unsafe { &mut *z.shm.addr.cast::<ngx_slab_pool_t>() };
    // One block as large as the pool allows: every free page.
    pool.set_log_nomem(0);
    // SAFETY: nginx's page size, set at startup.
    let page = unsafe { ngx_pagesize };
    let mut pages = pool.pfree;
    let mut block: *mut c_void = ptr::null_mut();
    while pages > 0 && block.is_null() {
        // SAFETY: the pool of this zone; the master alone runs now.
        block = unsafe { ngx_slab_alloc(pool, pages * page) };
        if block.is_null() {
            pages -= 1;
        }
    }
    // SAFETY: a fresh block of `pages * page` bytes, page-aligned, that lives with the zone.
    let zone = (!block.is_null())
        .then(|| unsafe { Zone::init(block.cast(), pages * page) })
        .flatten();
    if zone.is_none() {
        // SAFETY: the zone's log is the cycle's while nginx initialises zones.
        let log = z.shm.log;
        ngx::ngx_log_error!(
            NGX_LOG_EMERG,
            log,
            "\"kafka_metrics_zone\" of {} bytes holds no counters",
            z.shm.size
        );
        return NGX_ERROR as ngx_int_t;
    }
    pool.data = block;
    z.data = block;
    NGX_OK as ngx_int_t
}

/// The zone of the current configuration, once nginx has initialised it.
pub fn zone(shm_zone: *mut ngx_shm_zone_t) -> Option<Zone> {
    // SAFETY: null, or the configuration's zone; its data is set by `init`.
    let z = unsafe { shm_zone.as_ref() }?;
    if z.data.is_null() {
        return None;
    }
    // SAFETY: `init` laid a zone out at `data`, mapped for the life of the cycle.
    unsafe { Zone::reuse(z.data.cast()) }
}
