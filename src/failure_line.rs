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
}
