//! The eventfd that librdkafka writes when the producer's main queue becomes non-empty,
//! registered with nginx as a connection so that the event loop wakes the worker.

use ngx::core::Status;
use ngx::ffi::{
    ngx_close_connection, ngx_connection_t, ngx_event_handler_pt, ngx_event_t, ngx_get_connection,
    ngx_handle_read_event, ngx_log_t,
};

pub struct Wakeup {
    connection: *mut ngx_connection_t,
}

impl Wakeup {
    /// A non-blocking eventfd watched for reads, `handler` called when it is readable.
    pub fn new(handler: ngx_event_handler_pt, log: *mut ngx_log_t) -> Option<Wakeup> {
        // SAFETY: plain syscalls and nginx's connection API, on the worker thread after the
        // event module has initialised.
        unsafe {
            let fd = libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC);
            if fd == -1 {
                return None;
            }
            let connection = ngx_get_connection(fd, log);
            if connection.is_null() {
                libc::close(fd);
                return None;
            }
            let wakeup = Wakeup { connection };
            (*connection).log = log;
            let rev = (*connection).read;
            (*rev).handler = handler;
            (*rev).log = log;
            if ngx_handle_read_event(rev, 0) != Status::NGX_OK.0 {
                return None;
            }
            Some(wakeup)
        }
    }

    pub fn fd(&self) -> i32 {
        // SAFETY: the connection lives as long as `self`.
        unsafe { (*self.connection).fd }
    }

    /// Resets the eventfd's counter; called from the read handler with its event.
    pub fn drain(ev: *mut ngx_event_t) {
        // SAFETY: nginx passes the read event of our connection, whose `data` is it.
        let fd = unsafe { (*(*ev).data.cast::<ngx_connection_t>()).fd };
        let mut buf = [0u8; 8];
        // SAFETY: reads 8 bytes from a non-blocking eventfd into a buffer of 8.
        while unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
    }
}

impl Drop for Wakeup {
    fn drop(&mut self) {
        // SAFETY: created in `new`, released once; this also closes the eventfd.
        unsafe { ngx_close_connection(self.connection) };
    }
}
