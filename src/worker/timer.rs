//! nginx events that belong to the worker rather than to a connection: the safety timer and
//! the "serve more" event posted when a turn's budget ran out.

use core::ffi::c_void;
use core::mem::offset_of;
use core::ptr;

use ngx::ffi::{
    ngx_add_timer, ngx_connection_t, ngx_del_timer, ngx_delete_posted_event, ngx_event_handler_pt,
    ngx_event_t, ngx_log_t, ngx_msec_t, ngx_post_event, ngx_posted_next_events, ngx_socket_t,
};

/// What a debug-logging nginx reads as the event's ident: `ngx_event_ident(ev->data)` is the
/// `fd` of the `ngx_connection_t` that `data` points to. These events have no connection, so
/// `data` points to this stand-in, laid out like the head of `ngx_connection_t`.
#[repr(C)]
struct Ident {
    data: *mut c_void,
    read: *mut c_void,
    write: *mut c_void,
    fd: ngx_socket_t,
}

const _: () = assert!(offset_of!(Ident, fd) == offset_of!(ngx_connection_t, fd));

struct SharedIdent(Ident);
// SAFETY: never written; nginx only reads `fd` for its log lines.
unsafe impl Sync for SharedIdent {}

static IDENT: SharedIdent = SharedIdent(Ident {
    data: ptr::null_mut(),
    read: ptr::null_mut(),
    write: ptr::null_mut(),
    fd: -1,
});

/// An `ngx_event_t` of our own, boxed so that its address is stable while nginx holds it.
pub struct Event(Box<ngx_event_t>);

impl Event {
    pub fn new(handler: ngx_event_handler_pt, log: *mut ngx_log_t) -> Event {
        // SAFETY: a zeroed event is nginx's initial state for a timer or posted event.
        let mut ev: Box<ngx_event_t> = Box::new(unsafe { core::mem::zeroed() });
        ev.handler = handler;
        ev.log = log;
        ev.data = ptr::addr_of!(IDENT.0).cast_mut().cast();
        Event(ev)
    }

    /// (Re)arms the timer.
    pub fn arm(&mut self, ms: ngx_msec_t) {
        // SAFETY: the boxed event outlives its place in the timer tree (see `Drop`).
        unsafe { ngx_add_timer(&mut *self.0, ms) };
    }

    /// A cancelable timer does not keep an exiting worker alive.
    pub fn set_cancelable(&mut self, cancelable: bool) {
        self.0.set_cancelable(cancelable.into());
    }

    pub fn cancelable(&self) -> bool {
        self.0.cancelable() != 0
    }

    /// Runs the handler on the event loop's next turn, after the I/O of that turn.
    pub fn post_next(&mut self) {
        if self.0.posted() == 0 {
            // SAFETY: the boxed event outlives its place in the posted queue (see `Drop`);
            // the queue is nginx's own, used on this thread.
            unsafe { ngx_post_event(&mut *self.0, ptr::addr_of_mut!(ngx_posted_next_events)) };
        }
    }
}

impl Drop for Event {
    fn drop(&mut self) {
        // SAFETY: removes the event from nginx's timer tree and posted queue before it is freed.
        unsafe {
            if self.0.timer_set() != 0 {
                ngx_del_timer(&mut *self.0);
            }
            if self.0.posted() != 0 {
                ngx_delete_posted_event(&mut *self.0);
            }
        }
    }
}
