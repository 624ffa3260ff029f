//! Evaluating `kafka_topic` and `kafka_key` per request. Most configurations name one
//! variable and nothing else (`kafka_topic $http_topic;`): that variable is then read by its
//! index, which gives the same value as the complex value without running nginx's script
//! engine (measured by bench/callgrind.py: about 130 instructions a request less).

use ngx::ffi::{
    ngx_conf_t, ngx_http_complex_value_t, ngx_http_get_flushed_variable,
    ngx_http_get_variable_index, ngx_http_request_t, ngx_str_t, ngx_uint_t, ngx_variable_value_t,
    NGX_ERROR,
};
use ngx::http::Request;

/// The index of the variable that `cv` consists of, if it is one variable and nothing else
/// (`$name` or `${name}`); `None` for anything else, which is evaluated as a complex value.
pub fn lone_variable(cf: &mut ngx_conf_t, cv: &ngx_http_complex_value_t) -> Option<ngx_uint_t> {
    if cv.lengths.is_null() {
        return None; // no variable at all
    }
    let source = cv.value.as_bytes();
    let name = source.strip_prefix(b"$")?;
    let name = match name.strip_prefix(b"{") {
        Some(braced) => braced.strip_suffix(b"}")?,
        None => name,
    };
    // `$1`…`$9` are regex captures, not variables.
    let first = *name.first()?;
    if first.is_ascii_digit() || !name.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'_') {
        return None;
    }
    let mut name = ngx_str_t {
        len: name.len(),
        data: name.as_ptr().cast_mut(),
    };
    // SAFETY: the configuration being parsed; nginx copies the name. The index is the one
    // the complex value's own script uses.
    let index = unsafe { ngx_http_get_variable_index(cf, &mut name) };
    (index != NGX_ERROR as isize).then_some(index as ngx_uint_t)
}

/// The value of `cv` for `r`, in memory that lives as long as the request; `None` when
/// nginx could not evaluate it (no memory). A variable that is not found is empty, as in a
/// complex value.
pub fn evaluate<'r>(
    r: &'r Request,
    cv: &ngx_http_complex_value_t,
    lone: Option<ngx_uint_t>,
) -> Option<&'r [u8]> {
    let Some(index) = lone else {
        return r.get_complex_value(cv).map(|v| v.as_bytes());
    };
    let raw: *const ngx_http_request_t = r.as_ref();
    // SAFETY: a live request and an index obtained at configuration time. "Flushed", as a
    // complex value does: a variable that is not cacheable is evaluated again.
    let v = unsafe { ngx_http_get_flushed_variable(raw.cast_mut(), index) };
    // SAFETY: null, or the request's variable value.
    let v = unsafe { v.as_ref() }?;
    let Bits {
        len,
        not_found,
        no_cacheable,
    } = bits(v);
    if no_cacheable {
        // Its bytes may be shared and change (`$time_local`): the complex value copies them
        // into the request's pool, where they stay as long as the request.
        return r.get_complex_value(cv).map(|v| v.as_bytes());
    }
    if not_found || len == 0 || v.data.is_null() {
        return Some(&[]);
    }
    // SAFETY: a found variable's bytes, in the request's memory.
    Some(unsafe { core::slice::from_raw_parts(v.data, len) })
}

/// What `evaluate` reads of a variable value's bitfields.
#[derive(Debug, PartialEq, Eq)]
struct Bits {
    len: usize,
    not_found: bool,
    no_cacheable: bool,
}

/// A variable value's bitfields, read in one load: bindgen's accessors go bit by bit (about
/// 100 instructions for two of them). nginx declares `unsigned len:28; valid:1;
/// no_cacheable:1; not_found:1; escape:1;` in the first 32 bits, low bits first on the
/// little-endian machines nginx-kafka builds for; the test below holds it to the accessors.
fn bits(v: &ngx_variable_value_t) -> Bits {
    // SAFETY: the bitfields are the struct's first four bytes (`_bitfield_1`, a `[u8; 4]`
    // unit at offset 0, aligned for u32 by `_bitfield_align_1`).
    let bits = unsafe { core::ptr::from_ref(v).cast::<u32>().read() };
    Bits {
        len: (bits & 0x0fff_ffff) as usize,
        no_cacheable: bits & (1 << 29) != 0,
        not_found: bits & (1 << 30) != 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitfields_as_the_accessors_read_them() {
        for (len, not_found, valid, escape) in [
            (0, 0, 0, 0),
            (17, 0, 1, 0),
            (0x0fff_ffff, 0, 1, 1),
            (5, 1, 0, 0),
            (0, 1, 1, 1),
        ] {
            // SAFETY: a plain C struct, all zeroes is a valid value.
            let mut v: ngx_variable_value_t = unsafe { core::mem::zeroed() };
            v.set_len(len);
            v.set_valid(valid);
            v.set_not_found(not_found);
            v.set_escape(escape);
            v.set_no_cacheable(1 - valid);
            let read = bits(&v);
            assert_eq!(
                read,
                Bits {
                    len: v.len() as usize,
                    not_found: v.not_found() != 0,
                    no_cacheable: v.no_cacheable() != 0
                }
            );
            assert_eq!(
                read,
                Bits {
                    len: len as usize,
                    not_found: not_found != 0,
                    no_cacheable: valid == 0
                }
            );
        }
    }
}
