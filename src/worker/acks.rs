//! Requests of `kafka_delivery acked` locations, waiting for their event's delivery report
//! (and of `durable` ones with `fsync=batch`, waiting for their record's sync: `commit.rs`).
//!
//! A wait is shared by the message's ticket (until its report comes) and by the request (a
//! pool cleanup, until the request is answered or ends). Whichever comes first decides: the
//! report answers 204 or 503; the timer (`kafka_ack_timeout`) answers 503; a client that
//! goes away ends the request, and its cleanup disarms everything, so that the later report
//! finds no request to answer.

use core::cell::{Cell, UnsafeCell};
use core::ffi::c_void;
use std::rc::Rc;

use ngx::ffi::{
    ngx_add_timer, ngx_del_timer, ngx_event_t, ngx_http_finalize_request, ngx_http_request_t,
    ngx_msec_t, ngx_pool_cleanup_add, ngx_pool_cleanup_t,
};

/// What the waiting client is told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Acked,
    NotDelivered,
    TimedOut,
    /// `fsync=batch`: the sync of its journal record failed.
    NotStored,
}

#[repr(C)]
struct Wait {
    /// First, so that the timer's handler finds the wait from its event.
    ev: UnsafeCell<ngx_event_t>,
    r: Cell<*mut ngx_http_request_t>,
    cleanup: Cell<*mut ngx_pool_cleanup_t>,
    answer: fn(*mut ngx_http_request_t, Outcome) -> ngx::ffi::ngx_int_t,
}

/// The ticket's share of a wait.
pub struct Ack(Rc<Wait>);

impl Ack {
    /// Starts waiting for request `r`, for at most `timeout`; `answer` sends the response
    /// and returns what `ngx_http_finalize_request` is called with.
    pub fn new(
        r: *mut ngx_http_request_t,
        timeout: ngx_msec_t,
        answer: fn(*mut ngx_http_request_t, Outcome) -> ngx::ffi::ngx_int_t,
    ) -> Option<Ack> {
        // SAFETY: a live request; the cleanup is allocated from its pool.
        let cleanup = unsafe { ngx_pool_cleanup_add((*r).pool, 0) };
        // SAFETY: null on allocation failure, else a fresh cleanup of the request's pool.
        let c = unsafe { cleanup.as_mut() }?;
        let wait = Rc::new(Wait {
            // SAFETY: a zeroed event is nginx's initial state for a timer.
            ev: UnsafeCell::new(unsafe { core::mem::zeroed() }),
            r: Cell::new(r),
            cleanup: Cell::new(cleanup),
            answer,
        });
        c.handler = Some(request_gone);
        c.data = Rc::into_raw(wait.clone()).cast_mut().cast();
        // SAFETY: the event is ours; its `data` is the request's connection (what nginx's
        // debug log reads as the event's ident), which outlives the timer: the cleanup
        // removes it before the request's memory goes.
        unsafe {
            let ev = &mut *wait.ev.get();
            ev.handler = Some(timed_out);
            ev.data = (*r).connection.cast();
            ev.log = (*(*r).connection).log;
            ngx_add_timer(ev, timeout);
        }
        Some(Ack(wait))
    }

    /// Whether the request still waits for this report.
    pub fn waiting(&self) -> bool {
        !self.0.r.get().is_null()
    }

    /// Answers the waiting request, if it still waits.
    pub fn answer(self, outcome: Outcome) {
        finish(&self.0, outcome);
    }

    /// Stops waiting without answering: the message was not queued (the caller answers), or
    /// the process ends.
    pub fn cancel(self) {
        disarm(&self.0);
    }
}

/// Stops the timer and disarms the cleanup; returns the request if it still waited.
fn disarm(wait: &Rc<Wait>) -> Option<*mut ngx_http_request_t> {
    let r = wait.r.replace(core::ptr::null_mut());
    if r.is_null() {
        return None;
    }
    // SAFETY: the request is alive (its cleanup has not run): the timer is ours, and the
    // cleanup's `Rc` is reclaimed once, here.
    unsafe {
        let ev = &mut *wait.ev.get();
        if ev.timer_set() != 0 {
            ngx_del_timer(ev);
        }
        let c = &mut *wait.cleanup.replace(core::ptr::null_mut());
        c.handler = None;
        drop(Rc::from_raw(c.data.cast::<Wait>()));
    }
    Some(r)
}

/// Ends the wait and answers the request.
fn finish(wait: &Rc<Wait>, outcome: Outcome) {
    let Some(r) = disarm(wait) else {
        return;
    };
    let rc = (wait.answer)(r, outcome);
    // SAFETY: a live request, kept open with NGX_DONE until now; then, as nginx does after
    // a request's own events, run what the finalisation posted.
    unsafe {
        let c = (*r).connection;
        ngx_http_finalize_request(r, rc);
        ngx::ffi::ngx_http_run_posted_requests(c);
    }
}

extern "C" fn timed_out(ev: *mut ngx_event_t) {
    // SAFETY: the event is the first field of a `Wait` kept alive by the request's cleanup
    // while the timer is set; a strong reference is taken for the time of the call.
    let wait = unsafe {
        let w = ev.cast::<Wait>().cast_const();
        Rc::increment_strong_count(w);
        Rc::from_raw(w)
    };
    finish(&wait, Outcome::TimedOut);
}

unsafe extern "C" fn request_gone(data: *mut c_void) {
    // SAFETY: `data` is the `Rc` leaked by `Ack::new`, reclaimed once, here or in `finish`.
    let wait = unsafe { Rc::from_raw(data.cast::<Wait>()) };
    wait.r.set(core::ptr::null_mut());
    wait.cleanup.set(core::ptr::null_mut());
    // SAFETY: the timer is ours; it must not fire once the request's memory is gone.
    unsafe {
        let ev = &mut *wait.ev.get();
        if ev.timer_set() != 0 {
            ngx_del_timer(ev);
        }
    }
}
