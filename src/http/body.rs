//! Request bodies: the only code that walks `ngx_chain_t`. A body is in memory, in a temporary
//! file (`client_body_buffer_size`), or both.

use std::borrow::Cow;
use std::io;

use ngx::ffi::{ngx_buf_t, ngx_http_request_body_t, ngx_read_file};

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
    let (start, end) = (b.file_pos, b.file_last);
    let len = usize::try_from(end - start).unwrap_or(0);
    let have = out.len();
    out.resize(have + len, 0);
    let mut done = 0;
    while done < len {
        // SAFETY: the file belongs to the request body and stays open until the request
        // ends; the destination has `len - done` bytes left. nginx logs a failed read.
        let n = unsafe {
            ngx_read_file(
                b.file,
                out[have + done..].as_mut_ptr(),
                len - done,
                start + done as i64,
            )
        };
        match n {
            n if n > 0 => done += n as usize,
            0 => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "body file is short",
                ))
            }
            _ => return Err(io::Error::other("body file read failed")),
        }
    }
    Ok(())
}
