//! The FFI side of the topic registry (`crate::topics`): producer topic handles, the
//! cluster's topic list (fetched off the worker thread, never blocking it), and the
//! requests parked while it is fetched.

use core::ffi::c_void;
use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::ffi::CString;
use std::rc::Rc;
use std::sync::mpsc;

use ngx::ffi::{ngx_connection_t, ngx_http_request_t, ngx_pool_cleanup_add, ngx_pool_cleanup_t};
use rdkafka::bindings as rdsys;

use crate::delivery::Route;

/// A producer topic handle, created once per topic and kept, with a route for each location
/// that produces to it (the opaque of its messages: where failures are logged and counted).
pub struct Topic {
    rkt: *mut rdsys::rd_kafka_topic_t,
    /// Keyed by the location's configuration address; boxed so that each stays in place.
    routes: RefCell<Vec<(usize, Box<Route>)>>,
}

impl Topic {
    pub fn new(rk: *mut rdsys::rd_kafka_t, name: &str) -> Option<Topic> {
        let name = CString::new(name).ok()?;
        // SAFETY: a live producer; NULL configuration means the defaults.
        let rkt = unsafe { rdsys::rd_kafka_topic_new(rk, name.as_ptr(), core::ptr::null_mut()) };
        (!rkt.is_null()).then(|| Topic {
            rkt,
            routes: RefCell::new(Vec::new()),
        })
    }

    pub fn as_ptr(&self) -> *mut rdsys::rd_kafka_topic_t {
        self.rkt
    }

    /// The route of messages from `location` (any value that tells locations apart), made
    /// with `make` the first time. It lives as long as the topic handle.
    pub fn route(&self, location: usize, make: impl FnOnce() -> Route) -> *const Route {
        let mut routes = self.routes.borrow_mut();
        if let Some((_, r)) = routes.iter().find(|(l, _)| *l == location) {
            return &raw const **r;
        }
        routes.push((location, Box::new(make())));
        let (_, r) = &routes[routes.len() - 1];
        &raw const **r
    }
}

impl Drop for Topic {
    fn drop(&mut self) {
        // SAFETY: our reference, released once, before the producer is destroyed.
        unsafe { rdsys::rd_kafka_topic_destroy(self.rkt) };
    }
}

/// Sendable for the lookup thread: librdkafka handles may be used from any thread.
struct Handle(*mut rdsys::rd_kafka_t);
// SAFETY: librdkafka's API is thread-safe; the worker joins the thread before the handle goes.
unsafe impl Send for Handle {}

/// The cluster's topic list, fetched by a thread of ours (`rd_kafka_metadata` blocks) that
/// touches nothing but librdkafka and wakes the worker through its eventfd. At most one
/// fetch runs at a time; requests made meanwhile share it.
pub struct Lookups {
    requests: Option<mpsc::Sender<()>>,
    answers: mpsc::Receiver<Result<HashSet<String>, String>>,
    thread: Option<std::thread::JoinHandle<()>>,
    pending: bool,
    known: HashSet<String>,
    known_at_ms: Option<u64>,
}

/// A topic list younger than this answers "missing" without a new fetch.
const FRESH_MS: u64 = 1000;

impl Lookups {
    /// # Safety
    /// `rk` must stay valid until the returned value is dropped (it joins its thread).
    pub unsafe fn start(rk: *mut rdsys::rd_kafka_t, wake_fd: i32) -> Lookups {
        let (requests, inbox) = mpsc::channel::<()>();
        let (outbox, answers) = mpsc::channel();
        let handle = Handle(rk);
        let thread = std::thread::Builder::new()
            .name("kafka-topics".into())
            .spawn(move || {
                let handle = handle;
                while inbox.recv().is_ok() {
                    while inbox.try_recv().is_ok() {}
                    if outbox.send(fetch(handle.0)).is_err() {
                        break;
                    }
                    let one = 1u64;
                    // SAFETY: an eventfd write of 8 bytes; the worker closes the fd only
                    // after joining this thread.
                    unsafe { libc::write(wake_fd, (&raw const one).cast(), 8) };
                }
            })
            .ok();
        Lookups {
            requests: Some(requests),
            answers,
            thread,
            pending: false,
            known: HashSet::new(),
            known_at_ms: None,
        }
    }

    /// Whether the last topic list, however old, has `name`, and how old it is (ms): `None`
    /// before the first list.
    pub fn listed(&self, name: &str, now_ms: u64) -> Option<(bool, u64)> {
        let at = self.known_at_ms?;
        Some((self.known.contains(name), now_ms.saturating_sub(at)))
    }

    /// Whether the last topic list has `name`: `None` if it is too old to say "missing".
    pub fn known(&self, name: &str, now_ms: u64) -> Option<bool> {
        let at = self.known_at_ms?;
        if self.known.contains(name) {
            return Some(true);
        }
        (now_ms.saturating_sub(at) < FRESH_MS).then_some(false)
    }

    /// Asks for a new topic list, unless one is being fetched; false if none can be.
    pub fn refresh(&mut self) -> bool {
        if !self.pending {
            if let Some(tx) = &self.requests {
                self.pending = tx.send(()).is_ok();
            }
        }
        self.pending
    }

    pub fn pending(&self) -> bool {
        self.pending
    }

    /// A new topic list, if one arrived: `Err` when the cluster could not be asked.
    pub fn poll(&mut self, now_ms: u64) -> Option<Result<(), String>> {
        let answer = self.answers.try_recv().ok()?;
        self.pending = false;
        Some(answer.map(|topics| {
            self.known = topics;
            self.known_at_ms = Some(now_ms);
        }))
    }
}

impl Drop for Lookups {
    fn drop(&mut self) {
        // Closing the channel ends the thread after its current fetch (at most FETCH_MS).
        self.requests = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How long one fetch may take.
const FETCH_MS: i32 = 1000;

fn fetch(rk: *mut rdsys::rd_kafka_t) -> Result<HashSet<String>, String> {
    let mut md: *const rdsys::rd_kafka_metadata_t = core::ptr::null();
    // SAFETY: a live client (see `Lookups::start`); the metadata is ours until destroyed.
    unsafe {
        let err = rdsys::rd_kafka_metadata(rk, 1, core::ptr::null_mut(), &mut md, FETCH_MS);
        if err != rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR || md.is_null() {
            let text = core::ffi::CStr::from_ptr(rdsys::rd_kafka_err2str(err));
            return Err(text.to_string_lossy().into_owned());
        }
        let m = &*md;
        let mut names = HashSet::with_capacity(m.topic_cnt.max(0) as usize);
        for i in 0..m.topic_cnt.max(0) as usize {
            let t = &*m.topics.add(i);
            if t.err == rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR
                && !t.topic.is_null()
            {
                names.insert(
                    core::ffi::CStr::from_ptr(t.topic)
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
        rdsys::rd_kafka_metadata_destroy(md);
        Ok(names)
    }
}

/// A request waiting for a lookup. If nginx ends the request first (a shutdown timeout
/// closes its connection), the pool cleanup marks it gone and it is not resumed.
pub struct Waiter {
    r: *mut ngx_http_request_t,
    cleanup: *mut ngx_pool_cleanup_t,
    gone: Rc<Cell<bool>>,
}

unsafe extern "C" fn request_gone(data: *mut c_void) {
    // SAFETY: `data` is the `Rc` leaked by `Waiter::new`, reclaimed once, here or in `resume`.
    let gone = unsafe { Rc::from_raw(data.cast::<Cell<bool>>()) };
    gone.set(true);
}

impl Waiter {
    pub fn new(r: *mut ngx_http_request_t) -> Option<Waiter> {
        // SAFETY: a live request; the cleanup is allocated from its pool.
        let cleanup = unsafe { ngx_pool_cleanup_add((*r).pool, 0) };
        // SAFETY: null on allocation failure, else a fresh cleanup of the request's pool.
        let c = unsafe { cleanup.as_mut() }?;
        let gone = Rc::new(Cell::new(false));
        c.handler = Some(request_gone);
        c.data = Rc::into_raw(gone.clone()).cast_mut().cast();
        Some(Waiter { r, cleanup, gone })
    }

    /// Continues the request with `resume`, unless nginx has ended it meanwhile.
    pub fn resume(self, resume: impl FnOnce(*mut ngx_http_request_t)) {
        if self.gone.get() {
            return;
        }
        // SAFETY: the request is alive (its cleanup has not run); disarm the cleanup and
        // reclaim the `Rc` it held, once.
        unsafe {
            let c = &mut *self.cleanup;
            c.handler = None;
            drop(Rc::from_raw(c.data.cast::<Cell<bool>>()));
        }
        let c: *mut ngx_connection_t = {
            // SAFETY: a live request has a live connection.
            unsafe { (*self.r).connection }
        };
        resume(self.r);
        // As nginx does after a request's own events: run what the finalisation posted.
        // SAFETY: the connection outlives its requests' posted subrequests.
        unsafe { ngx::ffi::ngx_http_run_posted_requests(c) };
    }
}
