//! Handing one message to librdkafka: `rd_kafka_produce` when it has only a key and a value
//! (the common case, and the cheapest), `rd_kafka_produceva` when it also has headers or a
//! timestamp of its own (a replayed event keeps the time it was first accepted).

use core::ffi::{c_char, c_void};
use std::ffi::CString;

use rdkafka::bindings as rdsys;
use rdkafka::types::RDKafkaRespErr;

/// One message, borrowed; librdkafka copies what it keeps (`RD_KAFKA_MSG_F_COPY`).
pub struct Message<'a> {
    pub key: Option<&'a [u8]>,
    pub value: &'a [u8],
    /// Names NUL-terminated or not: see `Names`.
    pub headers: &'a [(&'a [u8], Option<&'a [u8]>)],
    /// Unix milliseconds; 0: now.
    pub timestamp_ms: i64,
}

/// Queues `m` on topic `rkt` of producer `rk` with `opaque` for its delivery report.
pub fn send(
    rk: *mut rdsys::rd_kafka_t,
    rkt: *mut rdsys::rd_kafka_topic_t,
    m: &Message<'_>,
    opaque: *mut c_void,
) -> Result<(), RDKafkaRespErr> {
    let (key_ptr, key_len) = m
        .key
        .map_or((core::ptr::null(), 0), |k| (k.as_ptr(), k.len()));
    if m.headers.is_empty() && m.timestamp_ms == 0 {
        // SAFETY: a live topic handle; librdkafka copies payload and key; the opaque
        // outlives the message (the caller's contract).
        let rc = unsafe {
            rdsys::rd_kafka_produce(
                rkt,
                -1, // RD_KAFKA_PARTITION_UA: the partitioner picks
                rdsys::RD_KAFKA_MSG_F_COPY,
                m.value.as_ptr().cast_mut().cast(),
                m.value.len(),
                key_ptr.cast(),
                key_len,
                opaque,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        // SAFETY: reads this thread's last librdkafka error.
        return Err(unsafe { rdsys::rd_kafka_last_error() });
    }

    // Header names must be NUL-terminated for librdkafka.
    let names: Vec<CString> = m
        .headers
        .iter()
        .map(|(n, _)| CString::new(n.split(|&b| b == 0).next().unwrap_or_default()))
        .collect::<Result<_, _>>()
        .unwrap_or_default();
    let mut vus: Vec<rdsys::rd_kafka_vu_t> = Vec::with_capacity(8 + m.headers.len());
    let vu = |vtype, u| rdsys::rd_kafka_vu_t { vtype, u };
    use rdsys::rd_kafka_vtype_t::*;
    vus.push(vu(
        RD_KAFKA_VTYPE_RKT,
        rdsys::rd_kafka_vu_s__bindgen_ty_1 { rkt },
    ));
    vus.push(vu(
        RD_KAFKA_VTYPE_MSGFLAGS,
        rdsys::rd_kafka_vu_s__bindgen_ty_1 {
            i: rdsys::RD_KAFKA_MSG_F_COPY,
        },
    ));
    vus.push(vu(
        RD_KAFKA_VTYPE_VALUE,
        rdsys::rd_kafka_vu_s__bindgen_ty_1 {
            mem: rdsys::rd_kafka_vu_s__bindgen_ty_1__bindgen_ty_1 {
                ptr: m.value.as_ptr().cast_mut().cast(),
                size: m.value.len(),
            },
        },
    ));
    if m.key.is_some() {
        vus.push(vu(
            RD_KAFKA_VTYPE_KEY,
            rdsys::rd_kafka_vu_s__bindgen_ty_1 {
                mem: rdsys::rd_kafka_vu_s__bindgen_ty_1__bindgen_ty_1 {
                    ptr: key_ptr.cast_mut().cast(),
                    size: key_len,
                },
            },
        ));
    }
    vus.push(vu(
        RD_KAFKA_VTYPE_OPAQUE,
        rdsys::rd_kafka_vu_s__bindgen_ty_1 { ptr: opaque },
    ));
    if m.timestamp_ms != 0 {
        vus.push(vu(
            RD_KAFKA_VTYPE_TIMESTAMP,
            rdsys::rd_kafka_vu_s__bindgen_ty_1 {
                i64_: m.timestamp_ms,
            },
        ));
    }
    for ((_, value), name) in m.headers.iter().zip(&names) {
        let (val, size) = match value {
            Some(v) => (v.as_ptr().cast::<c_void>(), v.len() as isize),
            None => (core::ptr::null(), -1),
        };
        vus.push(vu(
            RD_KAFKA_VTYPE_HEADER,
            rdsys::rd_kafka_vu_s__bindgen_ty_1 {
                header: rdsys::rd_kafka_vu_s__bindgen_ty_1__bindgen_ty_2 {
                    name: name.as_ptr().cast::<c_char>(),
                    val,
                    size,
                },
            },
        ));
    }
    // SAFETY: the producer of the live topic handle; every pointer in `vus` lives until the
    // call returns, and librdkafka copies what it keeps.
    let error = unsafe { rdsys::rd_kafka_produceva(rk, vus.as_ptr(), vus.len()) };
    if error.is_null() {
        return Ok(());
    }
    // SAFETY: an error object returned to us, read then destroyed once.
    unsafe {
        let code = rdsys::rd_kafka_error_code(error);
        rdsys::rd_kafka_error_destroy(error);
        Err(code)
    }
}
