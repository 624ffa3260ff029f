//! Logging: short macros over nginx's error log, and a writer for lines longer than nginx's
//! 2048-byte message buffer (delivery failures carry whole payloads, which must not be cut).

use ngx::ffi::{ngx_log_t, ngx_uint_t};

pub use ngx::ffi::{
    NGX_LOG_CRIT, NGX_LOG_EMERG, NGX_LOG_ERR, NGX_LOG_INFO, NGX_LOG_NOTICE, NGX_LOG_WARN,
};

// These macros are private to the crate: `#[macro_use] mod log` in lib.rs puts them in
// scope for the modules declared after it.

/// Logs at `level` through any `*mut ngx_log_t`.
macro_rules! log_at {
    ($level:expr, $log:expr, $($arg:tt)+) => {
        ngx::ngx_log_error!($level, $log, $($arg)+)
    };
}

/// Lifecycle: a producer started, a flush finished.
macro_rules! notice {
    ($log:expr, $($arg:tt)+) => { log_at!($crate::log::NGX_LOG_NOTICE, $log, $($arg)+) };
}

/// Client mistakes.
macro_rules! info {
    ($log:expr, $($arg:tt)+) => { log_at!($crate::log::NGX_LOG_INFO, $log, $($arg)+) };
}

/// Writes one line of any length to every destination of `log` that takes `level`, formatted
/// as nginx formats its own lines (`time [level] pid#tid: message`).
///
/// # Safety
/// `log` must be a valid nginx log chain, used on the nginx thread.
pub unsafe fn write_line(level: ngx_uint_t, log: *mut ngx_log_t, message: &[u8]) {
    use ngx::ffi::{ngx_cached_err_log_time, ngx_pid, ngx_time};

    const LEVELS: [&str; 9] = [
        "", "emerg", "alert", "crit", "error", "warn", "notice", "info", "debug",
    ];

    // SAFETY: nginx keeps the cached time string valid on its own thread.
    let time = unsafe { ngx::core::NgxStr::from_ngx_str(ngx_cached_err_log_time) };
    let mut line = Vec::with_capacity(time.as_bytes().len() + message.len() + 48);
    line.extend_from_slice(time.as_bytes());
    line.extend_from_slice(b" [");
    line.extend_from_slice(LEVELS.get(level).copied().unwrap_or("error").as_bytes());
    line.extend_from_slice(b"] ");
    // SAFETY: read-only globals set by nginx at process start.
    let pid = unsafe { ngx_pid };
    line.extend_from_slice(format!("{pid}#0: ").as_bytes());
    line.extend_from_slice(message);
    line.push(b'\n');

    let mut log = log;
    // SAFETY: a log chain is a valid singly linked list built by nginx's configuration.
    while let Some(l) = unsafe { log.as_mut() } {
        if l.log_level < level {
            break;
        }
        if let Some(writer) = l.writer {
            // SAFETY: nginx's writers (syslog, memory) take any line length.
            unsafe { writer(l, level, line.as_mut_ptr(), line.len()) };
        } else if !l.file.is_null() && ngx_time() != l.disk_full_time {
            // SAFETY: `file` is an open log file for as long as the cycle lives.
            let fd = unsafe { (*l.file).fd };
            write_all(fd, &line);
        }
        log = l.next;
    }
}

fn write_all(fd: i32, mut buf: &[u8]) {
    while !buf.is_empty() {
        // SAFETY: writes from a valid slice to an fd owned by nginx.
        let n = unsafe { libc_write(fd, buf.as_ptr().cast(), buf.len()) };
        if n <= 0 {
            return;
        }
        buf = &buf[n as usize..];
    }
}

extern "C" {
    #[link_name = "write"]
    fn libc_write(fd: i32, buf: *const core::ffi::c_void, count: usize) -> isize;
}
