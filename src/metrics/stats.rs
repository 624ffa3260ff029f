//! librdkafka's statistics: the JSON string a producer hands over every
//! `statistics.interval.ms` (its fields are described in librdkafka's `STATISTICS.md`),
//! reduced to the few numbers the metrics show.
//!
//! The JSON comes from librdkafka, but a bad statistics string must cost a sample, never a
//! worker: `parse` is lenient about numbers (negative ones count as 0, ones too big for the
//! field saturate, a missing one is 0) and bounds what it keeps, and it never panics.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::Broker;

/// Brokers kept, in name order: the rest are dropped.
pub const MAX_BROKERS: usize = 16;
/// Bytes of a broker's name kept (cut at a character boundary).
pub const MAX_NAME: usize = 64;
/// Bytes of a broker's state kept: librdkafka's longest, `APIVERSION_QUERY`, has 16.
pub const MAX_STATE: usize = 32;

/// What the metrics take from one statistics JSON.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Stats {
    /// Messages and bytes in the producer's queues, and their limits.
    pub msg_cnt: u64,
    pub msg_size: u64,
    pub msg_max: u64,
    pub msg_size_max: u64,
    /// At most `MAX_BROKERS`, in name order, without librdkafka's internal broker.
    pub brokers: Vec<Broker>,
}

/// Parses one statistics JSON. An error is a short reason, for the log.
pub fn parse(json: &[u8]) -> Result<Stats, String> {
    // serde would take a JSON array for a struct, field by field.
    if json.trim_ascii_start().first() != Some(&b'{') {
        return Err("statistics are not a JSON object".to_owned());
    }
    let raw: RawStats =
        serde_json::from_slice(json).map_err(|e| format!("invalid statistics: {e}"))?;
    let mut brokers = raw.brokers.0;
    brokers.sort_by(|a, b| a.name.cmp(&b.name));
    // Names cut to `MAX_NAME` may collide; one series per name.
    brokers.dedup_by(|a, b| a.name == b.name);
    brokers.truncate(MAX_BROKERS);
    Ok(Stats {
        msg_cnt: raw.msg_cnt.0,
        msg_size: raw.msg_size.0,
        msg_max: raw.msg_max.0,
        msg_size_max: raw.msg_size_max.0,
        brokers,
    })
}

/// The top level: unknown fields (`topics`, `tx`, `eos`...) are skipped.
#[derive(Deserialize)]
struct RawStats {
    msg_cnt: Count,
    msg_size: Count,
    msg_max: Count,
    msg_size_max: Count,
    brokers: Brokers,
}

/// `brokers.<name>`.
#[derive(Deserialize)]
struct RawBroker<'a> {
    #[serde(borrow, default)]
    name: Text<'a>,
    #[serde(default)]
    nodeid: NodeId,
    #[serde(borrow, default)]
    state: Text<'a>,
    /// `learned`, `configured`, `logical` or `internal` (librdkafka 1.x and later).
    #[serde(borrow, default)]
    source: Text<'a>,
    #[serde(default)]
    rtt: Option<Window>,
    #[serde(default)]
    throttle: Option<Window>,
    #[serde(default)]
    txerrs: Count,
    #[serde(default)]
    rxerrs: Count,
    #[serde(default)]
    req_timeouts: Count,
}

impl RawBroker<'_> {
    /// librdkafka's internal broker (`:0/internal`) serves local operations; it is no
    /// connection. Versions without `source` are known by its name.
    fn is_internal(&self, key: &str) -> bool {
        if !self.source.0.is_empty() {
            return self.source.0 == "internal";
        }
        let name = if self.name.0.is_empty() {
            key
        } else {
            &self.name.0
        };
        name.ends_with("/internal")
    }

    fn into_broker(self, key: &str) -> Broker {
        let name = if self.name.0.is_empty() {
            key
        } else {
            &self.name.0
        };
        let avg = |w: Option<Window>| w.map_or(0, |w| w.avg.0);
        Broker {
            name: cut(name, MAX_NAME).to_owned(),
            node_id: self.nodeid.0,
            state: cut(&self.state.0, MAX_STATE).to_owned(),
            rtt_us: avg(self.rtt),
            throttle_ms: avg(self.throttle),
            request_errors: self
                .txerrs
                .0
                .saturating_add(self.rxerrs.0)
                .saturating_add(self.req_timeouts.0),
        }
    }
}

/// A rolling window (`rtt`, `throttle`): only its average is shown.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Window {
    avg: Count,
}

/// The `brokers` object, as the brokers the metrics keep (not yet sorted nor bounded).
struct Brokers(Vec<Broker>);

impl<'de> Deserialize<'de> for Brokers {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct BrokersVisitor;
        impl<'de> Visitor<'de> for BrokersVisitor {
            type Value = Brokers;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of brokers")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Brokers, A::Error> {
                let mut brokers = Vec::new();
                while let Some(key) = map.next_key::<Text<'de>>()? {
                    let raw: RawBroker<'de> = map.next_value()?;
                    if !raw.is_internal(&key.0) {
                        brokers.push(raw.into_broker(&key.0));
                    }
                }
                Ok(Brokers(brokers))
            }
        }
        d.deserialize_map(BrokersVisitor)
    }
}

/// A count or gauge: never negative, saturating at `u64::MAX`; 0 when it is no number.
#[derive(Default)]
struct Count(u64);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Count(match Scalar::deserialize(d)? {
            Scalar::Unsigned(n) => n,
            Scalar::Signed(n) => u64::try_from(n).unwrap_or(0),
            // `as` saturates, and takes NaN to 0.
            Scalar::Float(f) => f as u64,
            Scalar::Text(_) | Scalar::Other => 0,
        }))
    }
}

/// A node id, clamped to `i32`; -1 (librdkafka's "no node yet") when missing or no number.
struct NodeId(i32);

impl Default for NodeId {
    fn default() -> Self {
        NodeId(-1)
    }
}

impl<'de> Deserialize<'de> for NodeId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let clamp = |n: i64| n.clamp(i32::MIN.into(), i32::MAX.into()) as i32;
        Ok(NodeId(match Scalar::deserialize(d)? {
            Scalar::Unsigned(n) => clamp(i64::try_from(n).unwrap_or(i64::MAX)),
            Scalar::Signed(n) => clamp(n),
            Scalar::Float(f) => f as i32,
            Scalar::Text(_) | Scalar::Other => -1,
        }))
    }
}

/// A string, borrowed from the JSON unless it has escapes; empty when it is no string.
#[derive(Default)]
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Text(match Scalar::deserialize(d)? {
            Scalar::Text(s) => s,
            _ => Cow::Borrowed(""),
        }))
    }
}

/// Any JSON value, as far as the fields above care.
enum Scalar<'a> {
    Unsigned(u64),
    Signed(i64),
    Float(f64),
    Text(Cow<'a, str>),
    /// `null`, a boolean, an array or an object (skipped).
    Other,
}

impl<'de: 'a, 'a> Deserialize<'de> for Scalar<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_u64<E>(self, n: u64) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Unsigned(n))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Signed(n))
    }
    fn visit_f64<E>(self, f: f64) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Float(f))
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Text(Cow::Borrowed(s)))
    }
    fn visit_str<E>(self, s: &str) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Text(Cow::Owned(s.to_owned())))
    }
    fn visit_string<E>(self, s: String) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Text(Cow::Owned(s)))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Other)
    }
    fn visit_unit<E>(self) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Other)
    }
    fn visit_none<E>(self) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Other)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar<'de>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar<'de>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Scalar::Other)
    }
}

/// `s` cut to at most `max` bytes, at a character boundary.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Modelled on the example in librdkafka's STATISTICS.md: a producer with its internal
    /// broker, the bootstrap address it was given, and the node that address resolved to.
    const SAMPLE: &str = r#"{
  "name": "rdkafka#producer-1",
  "client_id": "nginx-kafka",
  "type": "producer",
  "ts": 5016483227792,
  "time": 1527060869,
  "age": 5016483,
  "replyq": 0,
  "msg_cnt": 22710,
  "msg_size": 704010,
  "msg_max": 500000,
  "msg_size_max": 1073741824,
  "simple_cnt": 0,
  "metadata_cache_cnt": 1,
  "brokers": {
    ":0/internal": {
      "name": ":0/internal",
      "nodeid": -1,
      "nodename": "",
      "source": "internal",
      "state": "UP",
      "stateage": 5016482000,
      "outbuf_cnt": 0,
      "outbuf_msg_cnt": 0,
      "waitresp_cnt": 0,
      "waitresp_msg_cnt": 0,
      "tx": 0, "txbytes": 0, "txerrs": 7, "txretries": 0, "txidle": -1,
      "req_timeouts": 0,
      "rx": 0, "rxbytes": 0, "rxerrs": 0, "rxcorriderrs": 0, "rxpartial": 0, "rxidle": -1,
      "zbuf_grow": 0, "buf_grow": 0, "wakeups": 3, "connects": 0, "disconnects": 0,
      "int_latency": {"min": 0, "max": 0, "avg": 0, "sum": 0, "stddev": 0, "p50": 0,
        "p75": 0, "p90": 0, "p95": 0, "p99": 0, "p99_99": 0, "outofrange": 0,
        "hdrsize": 11376, "cnt": 0},
      "outbuf_latency": {"min": 0, "max": 0, "avg": 0, "sum": 0, "stddev": 0, "p50": 0,
        "p75": 0, "p90": 0, "p95": 0, "p99": 0, "p99_99": 0, "outofrange": 0,
        "hdrsize": 11376, "cnt": 0},
      "rtt": {"min": 0, "max": 0, "avg": 0, "sum": 0, "stddev": 0, "p50": 0, "p75": 0,
        "p90": 0, "p95": 0, "p99": 0, "p99_99": 0, "outofrange": 0, "hdrsize": 13424,
        "cnt": 0},
      "throttle": {"min": 0, "max": 0, "avg": 0, "sum": 0, "stddev": 0, "p50": 0,
        "p75": 0, "p90": 0, "p95": 0, "p99": 0, "p99_99": 0, "outofrange": 0,
        "hdrsize": 17520, "cnt": 0},
      "req": {},
      "toppars": {}
    },
    "127.0.0.1:9092/bootstrap": {
      "name": "127.0.0.1:9092/bootstrap",
      "nodeid": -1,
      "nodename": "127.0.0.1:9092",
      "source": "configured",
      "state": "DOWN",
      "stateage": 3011204,
      "outbuf_cnt": 0, "outbuf_msg_cnt": 0, "waitresp_cnt": 0, "waitresp_msg_cnt": 0,
      "tx": 4, "txbytes": 312, "txerrs": 1, "txretries": 0, "txidle": 3011990,
      "req_timeouts": 2,
      "rx": 3, "rxbytes": 1047, "rxerrs": 3, "rxcorriderrs": 0, "rxpartial": 0,
      "rxidle": 3012005,
      "zbuf_grow": 0, "buf_grow": 0, "wakeups": 18, "connects": 2, "disconnects": 1,
      "int_latency": {"min": 0, "max": 0, "avg": 0, "sum": 0, "stddev": 0, "p50": 0,
        "p75": 0, "p90": 0, "p95": 0, "p99": 0, "p99_99": 0, "outofrange": 0,
        "hdrsize": 11376, "cnt": 0},
      "outbuf_latency": {"min": 0, "max": 0, "avg": 0, "sum": 0, "stddev": 0, "p50": 0,
        "p75": 0, "p90": 0, "p95": 0, "p99": 0, "p99_99": 0, "outofrange": 0,
        "hdrsize": 11376, "cnt": 0},
      "rtt": {"min": 0, "max": 0, "avg": 0, "sum": 0, "stddev": 0, "p50": 0, "p75": 0,
        "p90": 0, "p95": 0, "p99": 0, "p99_99": 0, "outofrange": 0, "hdrsize": 13424,
        "cnt": 0},
      "throttle": {"min": 0, "max": 0, "avg": 0, "sum": 0, "stddev": 0, "p50": 0,
        "p75": 0, "p90": 0, "p95": 0, "p99": 0, "p99_99": 0, "outofrange": 0,
        "hdrsize": 17520, "cnt": 0},
      "req": {"Produce": 0, "Metadata": 2, "ApiVersion": 2},
      "toppars": {}
    },
    "127.0.0.1:9092/1": {
      "name": "127.0.0.1:9092/1",
      "nodeid": 1,
      "nodename": "127.0.0.1:9092",
      "source": "learned",
      "state": "UP",
      "stateage": 3010876,
      "outbuf_cnt": 0, "outbuf_msg_cnt": 0, "waitresp_cnt": 1, "waitresp_msg_cnt": 126,
      "tx": 9042, "txbytes": 6402171, "txerrs": 0, "txretries": 0, "txidle": 412,
      "req_timeouts": 0,
      "rx": 9041, "rxbytes": 487913, "rxerrs": 0, "rxcorriderrs": 0, "rxpartial": 0,
      "rxidle": 1203,
      "zbuf_grow": 0, "buf_grow": 0, "wakeups": 27301, "connects": 1, "disconnects": 0,
      "int_latency": {"min": 2, "max": 9016, "avg": 271, "sum": 2457015, "stddev": 632,
        "p50": 67, "p75": 191, "p90": 671, "p95": 1327, "p99": 3007, "p99_99": 9023,
        "outofrange": 0, "hdrsize": 11376, "cnt": 9041},
      "outbuf_latency": {"min": 1, "max": 304, "avg": 9, "sum": 81377, "stddev": 11,
        "p50": 6, "p75": 10, "p90": 16, "p95": 23, "p99": 51, "p99_99": 303,
        "outofrange": 0, "hdrsize": 11376, "cnt": 9042},
      "rtt": {"min": 301, "max": 18007, "avg": 1234, "sum": 11156981, "stddev": 1077,
        "p50": 959, "p75": 1399, "p90": 2159, "p95": 2927, "p99": 5599, "p99_99": 18047,
        "outofrange": 0, "hdrsize": 13424, "cnt": 9041},
      "throttle": {"min": 0, "max": 20, "avg": 5, "sum": 45205, "stddev": 2, "p50": 5,
        "p75": 5, "p90": 7, "p95": 8, "p99": 11, "p99_99": 20, "outofrange": 0,
        "hdrsize": 17520, "cnt": 9041},
      "req": {"Produce": 9039, "Metadata": 1, "ApiVersion": 1, "InitProducerId": 0},
      "toppars": {
        "events-0": {"topic": "events", "partition": 0}
      }
    }
  },
  "topics": {
    "events": {
      "topic": "events",
      "age": 3011,
      "metadata_age": 2011,
      "batchsize": {"min": 101, "max": 65490, "avg": 708, "sum": 6402171, "stddev": 1250,
        "p50": 511, "p75": 703, "p90": 1055, "p95": 1503, "p99": 6015, "p99_99": 65535,
        "outofrange": 0, "hdrsize": 14448, "cnt": 9039},
      "batchcnt": {"min": 1, "max": 2049, "avg": 22, "sum": 201336, "stddev": 40,
        "p50": 16, "p75": 22, "p90": 33, "p95": 47, "p99": 189, "p99_99": 2047,
        "outofrange": 0, "hdrsize": 8304, "cnt": 9039},
      "partitions": {
        "0": {"partition": 0, "broker": 1, "leader": 1, "desired": false, "unknown": false,
          "msgq_cnt": 0, "msgq_bytes": 0, "xmit_msgq_cnt": 0, "xmit_msgq_bytes": 0,
          "fetchq_cnt": 0, "fetchq_size": 0, "fetch_state": "none", "query_offset": -1001,
          "next_offset": 0, "app_offset": -1001, "stored_offset": -1001,
          "commited_offset": -1001, "committed_offset": -1001, "eof_offset": -1001,
          "lo_offset": -1001, "hi_offset": -1001, "ls_offset": -1001,
          "consumer_lag": -1, "consumer_lag_stored": -1, "txmsgs": 201336,
          "txbytes": 6290217, "rxmsgs": 0, "rxbytes": 0, "msgs": 224046,
          "rx_ver_drops": 0, "msgs_inflight": 126, "next_ack_seq": 0, "next_err_seq": 0,
          "acked_msgid": 0},
        "-1": {"partition": -1, "broker": -1, "leader": -1, "desired": false,
          "unknown": false, "msgq_cnt": 0, "msgq_bytes": 0, "xmit_msgq_cnt": 0,
          "xmit_msgq_bytes": 0, "fetchq_cnt": 0, "fetchq_size": 0, "fetch_state": "none",
          "query_offset": -1001, "next_offset": 0, "app_offset": -1001,
          "stored_offset": -1001, "commited_offset": -1001, "committed_offset": -1001,
          "eof_offset": -1001, "lo_offset": -1001, "hi_offset": -1001, "ls_offset": -1001,
          "consumer_lag": -1, "consumer_lag_stored": -1, "txmsgs": 0, "txbytes": 0,
          "rxmsgs": 0, "rxbytes": 0, "msgs": 0, "rx_ver_drops": 0, "msgs_inflight": 0,
          "next_ack_seq": 0, "next_err_seq": 0, "acked_msgid": 0}
      }
    }
  },
  "tx": 9046,
  "tx_bytes": 6402483,
  "rx": 9044,
  "rx_bytes": 488960,
  "txmsgs": 201336,
  "txmsg_bytes": 6290217,
  "rxmsgs": 0,
  "rxmsg_bytes": 0
}"#;

    fn broker(name: &str, state: &str) -> String {
        format!(r#""{name}":{{"name":"{name}","nodeid":1,"state":"{state}"}}"#)
    }

    fn stats_with(brokers: &str) -> String {
        format!(
            r#"{{"msg_cnt":1,"msg_size":2,"msg_max":3,"msg_size_max":4,"brokers":{{{brokers}}}}}"#
        )
    }

    #[test]
    fn sample_statistics() {
        let s = parse(SAMPLE.as_bytes()).unwrap();
        assert_eq!(
            s,
            Stats {
                msg_cnt: 22710,
                msg_size: 704010,
                msg_max: 500000,
                msg_size_max: 1073741824,
                brokers: vec![
                    Broker {
                        name: "127.0.0.1:9092/1".into(),
                        node_id: 1,
                        state: "UP".into(),
                        rtt_us: 1234,
                        throttle_ms: 5,
                        request_errors: 0,
                    },
                    Broker {
                        name: "127.0.0.1:9092/bootstrap".into(),
                        node_id: -1,
                        state: "DOWN".into(),
                        rtt_us: 0,
                        throttle_ms: 0,
                        request_errors: 1 + 3 + 2,
                    },
                ],
            }
        );
        assert!(s.brokers[0].up());
        assert!(!s.brokers[1].up());
    }

    #[test]
    fn internal_broker_is_skipped_without_source_too() {
        let json = stats_with(&[broker(":0/internal", "UP"), broker("b:9092/2", "UP")].join(","));
        let s = parse(json.as_bytes()).unwrap();
        assert_eq!(s.brokers.len(), 1);
        assert_eq!(s.brokers[0].name, "b:9092/2");
        // With `source`, it alone decides.
        let json = stats_with(r#""x":{"name":"x/internal","source":"learned"}"#);
        assert_eq!(parse(json.as_bytes()).unwrap().brokers.len(), 1);
    }

    #[test]
    fn missing_broker_fields_default() {
        let s = parse(stats_with(r#""k:9092/3":{}"#).as_bytes()).unwrap();
        assert_eq!(
            s.brokers,
            vec![Broker {
                name: "k:9092/3".into(),
                node_id: -1,
                ..Broker::default()
            }]
        );
        let s = parse(stats_with(r#""k":{"rtt":null,"throttle":{},"nodeid":null}"#).as_bytes())
            .unwrap();
        assert_eq!(s.brokers[0].rtt_us, 0);
        assert_eq!(s.brokers[0].node_id, -1);
    }

    #[test]
    fn numbers_are_clamped() {
        let json = r#"{"msg_cnt":-5,"msg_size":1e300,"msg_max":18446744073709551616,
            "msg_size_max":"12","brokers":{"b/1":{"nodeid":99999999999,
            "txerrs":18446744073709551615,"rxerrs":1,"req_timeouts":-3,
            "rtt":{"avg":-1.5},"throttle":{"avg":2.9}},
            "b/2":{"nodeid":-99999999999,"rtt":{"avg":[1,2]},"throttle":{"avg":true}}}}"#;
        let s = parse(json.as_bytes()).unwrap();
        assert_eq!(
            (s.msg_cnt, s.msg_size, s.msg_max, s.msg_size_max),
            (0, u64::MAX, u64::MAX, 0)
        );
        let b = &s.brokers[0];
        assert_eq!(
            (b.node_id, b.request_errors, b.rtt_us, b.throttle_ms),
            (i32::MAX, u64::MAX, 0, 2)
        );
        let b = &s.brokers[1];
        assert_eq!((b.node_id, b.rtt_us, b.throttle_ms), (i32::MIN, 0, 0));
    }

    #[test]
    fn brokers_are_sorted_and_bounded() {
        let names: Vec<String> = (0..40)
            .rev()
            .map(|i| format!("host{i:02}:9092/{i}"))
            .collect();
        let list: Vec<String> = names.iter().map(|n| broker(n, "UP")).collect();
        let s = parse(stats_with(&list.join(",")).as_bytes()).unwrap();
        assert_eq!(s.brokers.len(), MAX_BROKERS);
        let got: Vec<&str> = s.brokers.iter().map(|b| b.name.as_str()).collect();
        let want: Vec<String> = (0..MAX_BROKERS)
            .map(|i| format!("host{i:02}:9092/{i}"))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn long_names_and_states_are_cut_at_char_boundaries() {
        // 63 ASCII bytes, then a 2-byte character across the 64-byte mark.
        let long = format!("{}é{}", "a".repeat(63), "z".repeat(20));
        let state = format!("{}€€", "S".repeat(31));
        let json = stats_with(&format!(
            r#""{long}":{{"name":"{long}","state":"{state}"}},"{long}2":{{"name":"{long}2"}}"#
        ));
        let s = parse(json.as_bytes()).unwrap();
        // The two names collide once cut: one series is kept.
        assert_eq!(s.brokers.len(), 1);
        assert_eq!(s.brokers[0].name, "a".repeat(63));
        assert_eq!(s.brokers[0].state, "S".repeat(31));
        assert!(s.brokers[0].name.len() <= MAX_NAME && s.brokers[0].state.len() <= MAX_STATE);
    }

    #[test]
    fn escaped_strings_are_decoded() {
        let s =
            parse(stats_with(r#""a":{"name":"h\u00e9\"st:9092/1","state":"U\u0050"}"#).as_bytes())
                .unwrap();
        assert_eq!(s.brokers[0].name, "hé\"st:9092/1");
        assert!(s.brokers[0].up());
        // The key stands in for a missing name.
        let s = parse(stats_with(r#""k\\ey":{"state":"UP"}"#).as_bytes()).unwrap();
        assert_eq!(s.brokers[0].name, "k\\ey");
    }

    #[test]
    fn not_statistics_is_an_error() {
        for bad in [
            &b""[..],
            b"   ",
            b"null",
            b"42",
            b"\"x\"",
            b"[22710,704010,500000,1073741824,{}]",
            b"{}",
            b"{\"msg_cnt\":1,\"msg_size\":2,\"msg_max\":3,\"msg_size_max\":4}",
            b"{\"msg_cnt\":1,\"msg_size\":2,\"msg_max\":3,\"msg_size_max\":4,\"brokers\":[]}",
            b"{\"msg_cnt\":1,\"msg_size\":2,\"msg_max\":3,\"msg_size_max\":4,\"brokers\":{\"b\":7}}",
            b"{\"msg_cnt\":1,\"msg_size\":2,\"msg_max\":3,\"msg_size_max\":4,\"brokers\":{}} x",
            b"\xff\xfe{",
        ] {
            let e = parse(bad).unwrap_err();
            assert!(!e.is_empty() && e.len() < 200, "{e}");
        }
        assert!(parse(b"{}").unwrap_err().contains("msg_cnt"));
    }

    #[test]
    fn never_panics_on_truncated_or_mangled_input() {
        let sample = SAMPLE.as_bytes();
        for end in 0..sample.len() {
            let _ = parse(&sample[..end]);
        }
        // Every byte replaced by a few troublesome ones.
        let mut buf = sample.to_vec();
        for i in 0..buf.len() {
            for b in [b'"', b'{', b']', b'-', b'\\', 0xff, b'9'] {
                let old = buf[i];
                buf[i] = b;
                let _ = parse(&buf);
                buf[i] = old;
            }
        }
        // Deep nesting in a field that is skipped, and in one that is read.
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let _ = parse(stats_with(&format!(r#""b":{{"req":{deep}}}"#)).as_bytes());
        let _ = parse(stats_with(&format!(r#""b":{{"rtt":{{"avg":{deep}}}}}"#)).as_bytes());
        let _ = parse(format!(r#"{{"topics":{deep}}}"#).as_bytes());
    }

    #[test]
    fn cut_keeps_whole_characters() {
        assert_eq!(cut("abc", 3), "abc");
        assert_eq!(cut("abc", 2), "ab");
        assert_eq!(cut("a€", 3), "a");
        assert_eq!(cut("€", 0), "");
    }
}
