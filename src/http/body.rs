//! Request bodies: the only code that walks `ngx_chain_t`. A body is in memory, in a temporary
//! file (`client_body_buffer_size`), or both.

use std::borrow::Cow;
use std::io;

use ngx::ffi::{ngx_buf_t, ngx_http_request_body_t};

/// The whole body. One buffer in memory is borrowed; anything else is copied into one.
pub fn collect(rb: &ngx_http_request_body_t) -> io::Result<Cow<'_, [u8]>> {
    // SAFETY: the chain and its buffers belong to the request and live as long as `rb`.
    unsafe {
        let first = rb.bufs;
        if first.is_null() {
            return Ok(Cow::Borrowed(&[]));
        }
        if (*first).next.is_null() && (*(*first).buf).in_file() == 0 {
            return Ok(Cow::Borrowed(memory(&*(*first).buf)));
        }
        let mut out = Vec::new();
        let mut cl = first;
        while let Some(link) = cl.as_ref() {
            let b = &*link.buf;
            if b.in_file() != 0 {
                read_file(b, &mut out)?;
            } else {
                out.extend_from_slice(memory(b));
            }
            cl = link.next;
        }
        Ok(Cow::Owned(out))
    }
}

/// # Safety
/// `b` must be an in-memory buffer of a live request.
unsafe fn memory(b: &ngx_buf_t) -> &[u8] {
    if b.pos.is_null() || b.last <= b.pos {
        return &[];
    }
    // SAFETY: `pos..last` is the buffer's filled part.
    unsafe { std::slice::from_raw_parts(b.pos, b.last.offset_from(b.pos) as usize) }
}

/// # Safety
/// `b` must be a file buffer of a live request, whose temporary file is still open.
unsafe fn read_file(b: &ngx_buf_t, out: &mut Vec<u8>) -> io::Result<()> {
    // SAFETY: the file belongs to the request body and stays open until the request ends.
    let fd = unsafe { (*b.file).fd };
    let (mut offset, end) = (b.file_pos, b.file_last);
    out.reserve((end - offset).max(0) as usize);
    let mut chunk = vec![0u8; 64 * 1024];
    while offset < end {
        let want = chunk.len().min((end - offset) as usize);
        // SAFETY: reads into a buffer of at least `want` bytes.
        let n = unsafe { libc::pread(fd, chunk.as_mut_ptr().cast(), want, offset) };
        match n {
            n if n > 0 => {
                out.extend_from_slice(&chunk[..n as usize]);
                offset += n as i64;
            }
            0 => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "body file is short",
                ))
            }
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
    Ok(())
}
