//! The error-log line written for a message that was not delivered: everything needed to
//! produce it again, the payload escaped so that the exact bytes can be recovered.

use crate::escape::log_escape;

/// One error-log line for a message that was not delivered.
pub fn failure_line(
    topic: &str,
    partition: i32,
    key: Option<&[u8]>,
    error: &str,
    payload: &[u8],
) -> Vec<u8> {
    failure_line_with(topic, partition, key, &[], false, error, payload)
}

/// The same, with the record's headers (`header="NAME=VALUE"`, repeated; a null value has no
/// `=`), and `possibly_delivered=1` when the broker may have it after all (it timed out in
/// flight): a replay of it may be a duplicate.
pub fn failure_line_with(
    topic: &str,
    partition: i32,
    key: Option<&[u8]>,
    headers: &[(&[u8], Option<&[u8]>)],
    possibly_delivered: bool,
    error: &str,
    payload: &[u8],
) -> Vec<u8> {
    let mut line = Vec::with_capacity(payload.len() + 128);
    line.extend_from_slice(b"kafka: message not delivered: topic=\"");
    log_escape(topic.as_bytes(), &mut line);
    line.extend_from_slice(format!("\" partition={partition} error=\"").as_bytes());
    log_escape(error.as_bytes(), &mut line);
    line.push(b'"');
    if let Some(key) = key {
        line.extend_from_slice(b" key=\"");
        log_escape(key, &mut line);
        line.push(b'"');
    }
    for (name, value) in headers {
        line.extend_from_slice(b" header=\"");
        log_escape(name, &mut line);
        if let Some(value) = value {
            line.push(b'=');
            log_escape(value, &mut line);
        }
        line.push(b'"');
    }
    if possibly_delivered {
        line.extend_from_slice(b" possibly_delivered=1");
    }
    line.extend_from_slice(format!(" bytes={} payload=\"", payload.len()).as_bytes());
    log_escape(payload, &mut line);
    line.push(b'"');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_line_carries_everything_needed_to_replay() {
        let line = failure_line(
            "t1",
            -1,
            Some(b"u1"),
            "Local: Message timed out",
            b"{\"a\":\"x\ny\"}",
        );
        assert_eq!(
            String::from_utf8(line).unwrap(),
            "kafka: message not delivered: topic=\"t1\" partition=-1 \
             error=\"Local: Message timed out\" key=\"u1\" bytes=11 payload=\"{\\\"a\\\":\\\"x\\x0ay\\\"}\""
        );
    }

    #[test]
    fn headers_and_possible_duplicates_are_marked() {
        let line = failure_line_with(
            "t1",
            0,
            None,
            &[(b"id", Some(b"r-1")), (b"empty", None)],
            true,
            "_MSG_TIMED_OUT",
            b"v",
        );
        assert_eq!(
            String::from_utf8(line).unwrap(),
            "kafka: message not delivered: topic=\"t1\" partition=0 error=\"_MSG_TIMED_OUT\" \
             header=\"id=r-1\" header=\"empty\" possibly_delivered=1 bytes=1 payload=\"v\""
        );
    }
}
