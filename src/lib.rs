//! nginx-kafka: an nginx HTTP module that accepts events over HTTP and produces them to Kafka.
//!
//! This file holds only the module statics, the `HttpModule` glue and the process hooks; each
//! area lives in a module of its own. Pure logic is unit-tested on its own; the FFI edge calls
//! into nginx, so unit-test executables (which have no nginx to link against) leave it out.

// Pure logic.
pub mod aws;
pub mod escape;
pub mod failure_line;
pub mod metrics;
pub mod properties;
pub mod record;
pub mod repeats;
pub mod sites;
pub mod spool;
pub mod topics;

// The FFI edge.
#[cfg(not(test))]
#[macro_use]
mod log;
#[cfg(not(test))]
mod collect;
#[cfg(not(test))]
mod conf;
#[cfg(not(test))]
mod counters;
#[cfg(not(test))]
mod delivery;
#[cfg(not(test))]
mod http;
#[cfg(not(test))]
mod shm;
#[cfg(not(test))]
mod worker;

#[cfg(not(test))]
pub use module::*;

#[cfg(not(test))]
mod module {
    use core::ffi::{c_char, c_void};
    use core::ptr::addr_of;

    use ngx::core::Status;
    use ngx::ffi::{
        ngx_conf_t, ngx_cycle_t, ngx_http_module_t, ngx_int_t, ngx_module_t, ngx_uint_t,
        NGX_HTTP_MODULE, NGX_PROCESS_SINGLE, NGX_PROCESS_WORKER,
    };
    use ngx::http::{HttpModule, HttpModuleLocationConf, HttpModuleMainConf};

    use crate::conf::{self, LocationConf, MainConf};
    use crate::worker;

    /// The module's type for the `ngx` traits.
    pub struct Module;

    impl HttpModule for Module {
        fn module() -> &'static ngx_module_t {
            // SAFETY: nginx writes the module static only while loading, before any hook runs.
            unsafe { &*addr_of!(ngx_http_kafka_module) }
        }

        unsafe extern "C" fn init_main_conf(cf: *mut ngx_conf_t, conf: *mut c_void) -> *mut c_char {
            // SAFETY: nginx passes the parser state and the configuration that
            // `create_main_conf` made.
            conf::init_main(unsafe { &mut *cf }, unsafe { &mut *conf.cast() })
        }
    }

    // SAFETY: the main configuration slot of this module holds a `MainConf`.
    unsafe impl HttpModuleMainConf for Module {
        type MainConf = MainConf;
    }

    // SAFETY: the location configuration slot of this module holds a `LocationConf`.
    unsafe impl HttpModuleLocationConf for Module {
        type LocationConf = LocationConf;
    }

    extern "C" fn merge_loc_conf(
        cf: *mut ngx_conf_t,
        prev: *mut c_void,
        conf: *mut c_void,
    ) -> *mut c_char {
        // SAFETY: nginx passes the configurations that `create_loc_conf` made.
        unsafe { conf::merge_location(&mut *cf, &*prev.cast(), &mut *conf.cast()) }
    }

    extern "C" fn preconfiguration(cf: *mut ngx_conf_t) -> ngx_int_t {
        // SAFETY: nginx passes the parser state.
        crate::http::add_variables(unsafe { &mut *cf })
    }

    static NGX_HTTP_KAFKA_MODULE_CTX: ngx_http_module_t = ngx_http_module_t {
        preconfiguration: Some(preconfiguration),
        postconfiguration: None,
        create_main_conf: Some(Module::create_main_conf),
        init_main_conf: Some(Module::init_main_conf),
        create_srv_conf: None,
        merge_srv_conf: None,
        create_loc_conf: Some(Module::create_loc_conf),
        merge_loc_conf: Some(merge_loc_conf),
    };

    ngx::ngx_modules!(ngx_http_kafka_module);

    /// The module, as nginx sees it.
    #[used]
    #[allow(non_upper_case_globals)]
    #[no_mangle]
    pub static mut ngx_http_kafka_module: ngx_module_t = ngx_module_t {
        ctx: addr_of!(NGX_HTTP_KAFKA_MODULE_CTX) as _,
        commands: addr_of!(conf::COMMANDS) as _,
        type_: NGX_HTTP_MODULE as _,
        init_module: Some(init_module),
        init_process: Some(init_process),
        exit_process: Some(exit_process),
        ..ngx_module_t::default()
    };

    /// Runs in the master (or single process) for each new configuration. Only a single
    /// process (`master_process off`) has a producer here, which a reload must replace.
    extern "C" fn init_module(cycle: *mut ngx_cycle_t) -> ngx_int_t {
        // SAFETY: nginx passes the new cycle; `ngx_process` is only written by nginx.
        let (cycle, process) = unsafe { (&mut *cycle, ngx::ffi::ngx_process) };
        if process != NGX_PROCESS_SINGLE as ngx_uint_t {
            return Status::NGX_OK.into();
        }
        worker::reconfigure(cycle).into()
    }

    /// Starts this worker's producer. Cache managers and loaders run this hook too: they get
    /// none, and neither does the master (librdkafka's threads would not survive `fork`).
    extern "C" fn init_process(cycle: *mut ngx_cycle_t) -> ngx_int_t {
        // SAFETY: nginx passes the current cycle; `ngx_process` is only written by nginx.
        let (cycle, process) = unsafe { (&mut *cycle, ngx::ffi::ngx_process) };
        if process != NGX_PROCESS_WORKER as ngx_uint_t
            && process != NGX_PROCESS_SINGLE as ngx_uint_t
        {
            return Status::NGX_OK.into();
        }
        crate::counters::start(cycle);
        worker::start(cycle).into()
    }

    /// Flushes this worker's producer, for a bounded time, and logs what was not delivered.
    extern "C" fn exit_process(cycle: *mut ngx_cycle_t) {
        // SAFETY: nginx passes the current cycle.
        worker::stop(unsafe { &mut *cycle });
        crate::counters::stop();
    }
}
