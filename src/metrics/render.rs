//! The two forms the `kafka_metrics` endpoint serves a `Snapshot` in: Prometheus text
//! (exposition format 0.0.4, named like the other nginx exporters') and JSON.
//!
//! Both append to a buffer the caller owns and allocate little per sample: the endpoint may
//! be scraped under load with thousands of counter sets.

use std::io::Write;

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

use super::{
    Broker, CounterSet, ProducerState, Snapshot, SpoolGauges, WorkerGauges, ZoneUsage, RESULTS,
};

/// The `Content-Type` of `prometheus`'s output.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Appends `s` in the Prometheus text format to `out`. Each family appears once, with its
/// samples together; a family with no samples is left out.
pub fn prometheus(s: &Snapshot, out: &mut Vec<u8>) {
    let mut t = Text::new(out);

    t.family(
        "nginx_kafka_requests_total",
        COUNTER,
        "Requests by location, topic and result: accepted, or the error code the client got.",
    );
    for c in &s.counters {
        for (result, (&name, &n)) in RESULTS.iter().zip(&c.requests).enumerate() {
            // `accepted` always for a known topic, so that rates start from 0.
            if n != 0 || (result == super::ACCEPTED && !c.topic.is_empty()) {
                let [location, topic] = topic_labels(c);
                t.sample(
                    &[location, topic, ("result", Label::Str(name))],
                    Value::Int(n),
                );
            }
        }
    }
    let per_topic: [Family<CounterSet>; 3] = [
        (
            "nginx_kafka_accepted_bytes_total",
            COUNTER,
            "Bytes of accepted events (value and key).",
            |c| c.bytes,
        ),
        (
            "nginx_kafka_delivered_total",
            COUNTER,
            "Accepted events the brokers acknowledged.",
            |c| c.delivered,
        ),
        (
            "nginx_kafka_failed_total",
            COUNTER,
            "Accepted events that were not delivered (each logged in the error log).",
            |c| c.failed,
        ),
    ];
    for (name, kind, help, value) in per_topic {
        t.family(name, kind, help);
        for c in s.counters.iter().filter(|c| !c.topic.is_empty()) {
            t.sample(&topic_labels(c), Value::Int(value(c)));
        }
    }

    let zone: [Family<ZoneUsage>; 4] = [
        (
            "nginx_kafka_zone_size_bytes",
            GAUGE,
            "Size of the shared memory zone that holds the metrics.",
            |z| z.size_bytes,
        ),
        (
            "nginx_kafka_zone_slots",
            GAUGE,
            "Counter sets (location and topic) the zone can hold.",
            |z| z.slots,
        ),
        (
            "nginx_kafka_zone_slots_used",
            GAUGE,
            "Counter sets in use in the zone.",
            |z| z.slots_used,
        ),
        (
            "nginx_kafka_zone_overflow_total",
            COUNTER,
            "Requests counted under location and topic \"other\" because the zone was full.",
            |z| z.overflow,
        ),
    ];
    for (name, kind, help, value) in zone {
        t.family(name, kind, help);
        t.sample(
            &[("zone", Label::Str(&s.zone.name))],
            Value::Int(value(&s.zone)),
        );
    }

    t.family(
        "nginx_kafka_producer_state",
        GAUGE,
        "State of the worker's Kafka producer: 1 for the current state, 0 for the others.",
    );
    for w in &s.workers {
        for state in ProducerState::ALL {
            let [worker, pid] = worker_labels(w);
            let labels = [worker, pid, ("state", Label::Str(state.name()))];
            t.sample(&labels, Value::Int((w.state == state).into()));
        }
    }
    let per_worker: [Family<WorkerGauges>; 6] = [
        (
            "nginx_kafka_producer_up",
            GAUGE,
            "Whether the worker's producer has a broker connection up.",
            |w| (w.state == ProducerState::Up).into(),
        ),
        (
            "nginx_kafka_queue_messages",
            GAUGE,
            "Messages in the producer's queues, from its last statistics.",
            |w| w.queue_messages,
        ),
        (
            "nginx_kafka_queue_bytes",
            GAUGE,
            "Bytes of the messages in the producer's queues, from its last statistics.",
            |w| w.queue_bytes,
        ),
        (
            "nginx_kafka_queue_max_messages",
            GAUGE,
            "Messages the producer's queues can hold.",
            |w| w.queue_max_messages,
        ),
        (
            "nginx_kafka_queue_max_bytes",
            GAUGE,
            "Bytes the producer's queues can hold.",
            |w| w.queue_max_bytes,
        ),
        (
            "nginx_kafka_in_flight_messages",
            GAUGE,
            "Messages not yet reported delivered or failed.",
            |w| w.in_flight,
        ),
    ];
    for (name, kind, help, value) in per_worker {
        t.family(name, kind, help);
        for w in &s.workers {
            t.sample(&worker_labels(w), Value::Int(value(w)));
        }
    }
    t.family(
        "nginx_kafka_last_delivery_error_timestamp_seconds",
        GAUGE,
        "When the worker's last delivery error happened, with librdkafka's name for it.",
    );
    for w in &s.workers {
        if let Some(e) = &w.last_error {
            let [worker, pid] = worker_labels(w);
            let labels = [worker, pid, ("error", Label::Str(&e.name))];
            t.sample(&labels, Value::Int(e.time));
        }
    }
    // Only workers with a `kafka_spool`. The counts are the process's, like the brokers'
    // request errors: a new worker starts new series (another `pid`).
    let spool: [Family<SpoolGauges>; 11] = [
        (
            "nginx_kafka_spool_bytes",
            GAUGE,
            "Bytes in the spool directory (every worker's files) as the worker last saw it.",
            |s| s.bytes,
        ),
        (
            "nginx_kafka_spool_files",
            GAUGE,
            "The worker's spool files that hold records not yet resolved.",
            |s| s.files,
        ),
        (
            "nginx_kafka_spool_journaled_total",
            COUNTER,
            "Events written to the worker's journal (durable locations).",
            |s| s.journaled,
        ),
        (
            "nginx_kafka_spool_spooled_total",
            COUNTER,
            "Records written to the spool: events not delivered or not queued, failed replays.",
            |s| s.spooled,
        ),
        (
            "nginx_kafka_spool_replayed_total",
            COUNTER,
            "Spooled records handed to the producer again.",
            |s| s.replayed,
        ),
        (
            "nginx_kafka_spool_dead_letter_total",
            COUNTER,
            "Records written to the dead-letter file: they can never be delivered.",
            |s| s.dead,
        ),
        (
            "nginx_kafka_spool_refused_total",
            COUNTER,
            "Writes the spool refused: its max_size, a full disk or an error.",
            |s| s.refused,
        ),
        (
            "nginx_kafka_spool_corrupt_total",
            COUNTER,
            "Damaged regions skipped in spool files being replayed.",
            |s| s.corrupt,
        ),
        (
            "nginx_kafka_spool_torn_total",
            COUNTER,
            "Torn tails (a write cut short) skipped in spool files being replayed.",
            |s| s.torn,
        ),
        (
            "nginx_kafka_spool_adopted_total",
            COUNTER,
            "Spool files of processes that are gone, taken over by the worker to replay.",
            |s| s.adopted,
        ),
        (
            "nginx_kafka_spool_syncs_total",
            COUNTER,
            "Syncs of the worker's spool files to storage: one per fsync period, or per batch.",
            |s| s.syncs,
        ),
    ];
    for (name, kind, help, value) in spool {
        t.family(name, kind, help);
        for w in &s.workers {
            if let Some(spool) = &w.spool {
                t.sample(&worker_labels(w), Value::Int(value(spool)));
            }
        }
    }

    t.family(
        "nginx_kafka_broker_up",
        GAUGE,
        "Whether the producer's connection to the broker is up.",
    );
    broker_samples(&mut t, s, None, |b| Value::Int(b.up().into()));
    t.family(
        "nginx_kafka_broker_state",
        GAUGE,
        "librdkafka's state of the connection to the broker (the sample present is 1).",
    );
    broker_samples(&mut t, s, Some(|b| &b.state), |_| Value::Int(1));
    t.family(
        "nginx_kafka_broker_rtt_seconds",
        GAUGE,
        "Average round-trip time to the broker over the last statistics window.",
    );
    broker_samples(&mut t, s, None, |b| Value::Float(b.rtt_us as f64 / 1e6));
    t.family(
        "nginx_kafka_broker_throttle_seconds",
        GAUGE,
        "Average time the broker throttled the producer over the last statistics window.",
    );
    broker_samples(&mut t, s, None, |b| {
        Value::Float(b.throttle_ms as f64 / 1e3)
    });
    t.family(
        "nginx_kafka_broker_request_errors_total",
        COUNTER,
        "Requests to the broker that failed (send or receive errors, timeouts).",
    );
    broker_samples(&mut t, s, None, |b| Value::Int(b.request_errors));

    // `kafka_sites`: events by site (a request's events count one each).
    t.family(
        "nginx_kafka_site_events_total",
        COUNTER,
        "Events of kafka_collect by site and result: accepted, or why they were refused.",
    );
    for c in &s.sites {
        for (result, (&name, &n)) in RESULTS.iter().zip(&c.requests).enumerate() {
            if n != 0 || result == super::ACCEPTED {
                t.sample(
                    &[("site", Label::Str(&c.topic)), ("result", Label::Str(name))],
                    Value::Int(n),
                );
            }
        }
    }
    t.family(
        "nginx_kafka_site_accepted_bytes_total",
        COUNTER,
        "Bytes of the site's accepted events (value and key).",
    );
    for c in &s.sites {
        t.sample(&[("site", Label::Str(&c.topic))], Value::Int(c.bytes));
    }
    t.finish();
}

/// Appends `s` as one compact JSON object to `out`:
///
/// ```json
/// {"zone":{"name":..,"size_bytes":..,"slots":..,"slots_used":..,"overflow":..},
///  "locations":{"<location>":{"<topic>":{"requests":{"accepted":N,..},
///    "accepted_bytes":N,"delivered":N,"failed":N}}},
///  "workers":[{"worker":0,"pid":123,"state":"up","queue":{"messages":..,"bytes":..,
///    "max_messages":..,"max_bytes":..},"in_flight":..,"last_error":null|{"name":..,"time":..},
///    "spool":null|{"bytes":..,"files":..,"journaled":..,"spooled":..,"replayed":..,
///      "dead_letter":..,"refused":..,"corrupt":..,"torn":..,"adopted":..,
///      "syncs":..},
///    "brokers":[{"name":..,"node_id":..,"state":..,"up":true,"rtt_seconds":..,
///      "throttle_seconds":..,"request_errors":..}]}]}
/// ```
pub fn json(s: &Snapshot, out: &mut Vec<u8>) {
    // Locations group their topics, so the sets must be in order; they normally are, and
    // sorting sorted input is one pass.
    let mut sets: Vec<&CounterSet> = s.counters.iter().collect();
    sets.sort_by(|a, b| (&a.location, &a.topic).cmp(&(&b.location, &b.topic)));
    let doc = JsonSnapshot {
        zone: JsonZone {
            name: &s.zone.name,
            size_bytes: s.zone.size_bytes,
            slots: s.zone.slots,
            slots_used: s.zone.slots_used,
            overflow: s.zone.overflow,
        },
        locations: Locations(&sets),
        workers: Workers(&s.workers),
    };
    let start = out.len();
    // Writing to a Vec fails only if memory runs out; leave no half object behind then.
    if serde_json::to_writer(&mut *out, &doc).is_err() {
        out.truncate(start);
        out.extend_from_slice(b"{}");
    }
}

/// One sample per broker of each worker, labelled `worker`, `pid`, `broker`, `node_id`, and
/// `state` when `state` is given.
fn broker_samples(
    t: &mut Text,
    s: &Snapshot,
    state: Option<fn(&Broker) -> &str>,
    value: fn(&Broker) -> Value,
) {
    for w in &s.workers {
        let [worker, pid] = worker_labels(w);
        for b in &w.brokers {
            let broker = ("broker", Label::Str(&b.name));
            let node = ("node_id", Label::Int(b.node_id.into()));
            match state {
                Some(state) => {
                    let state = ("state", Label::Str(state(b)));
                    t.sample(&[worker, pid, broker, node, state], value(b));
                }
                None => t.sample(&[worker, pid, broker, node], value(b)),
            }
        }
    }
}

/// A family whose samples are one number of each `T`: name, type, help, the number.
type Family<T> = (&'static str, &'static str, &'static str, fn(&T) -> u64);

const COUNTER: &str = "counter";
const GAUGE: &str = "gauge";

/// A label value: text (escaped when written) or a number.
#[derive(Clone, Copy)]
enum Label<'a> {
    Str(&'a str),
    Int(i64),
}

#[derive(Clone, Copy)]
enum Value {
    Int(u64),
    Float(f64),
}

fn topic_labels(c: &CounterSet) -> [(&'static str, Label<'_>); 2] {
    [
        ("location", Label::Str(&c.location)),
        ("topic", Label::Str(&c.topic)),
    ]
}

fn worker_labels(w: &WorkerGauges) -> [(&'static str, Label<'static>); 2] {
    [
        ("worker", Label::Int(w.worker.into())),
        ("pid", Label::Int(w.pid.into())),
    ]
}

/// The Prometheus text being written: the family under way, dropped again at its end if no
/// sample came.
struct Text<'a> {
    out: &'a mut Vec<u8>,
    name: &'static str,
    start: usize,
    samples: usize,
}

impl<'a> Text<'a> {
    fn new(out: &'a mut Vec<u8>) -> Self {
        let start = out.len();
        Text {
            out,
            name: "",
            start,
            samples: 0,
        }
    }

    fn family(&mut self, name: &'static str, kind: &str, help: &str) {
        self.end_family();
        self.name = name;
        self.start = self.out.len();
        self.samples = 0;
        // Writing to a Vec cannot fail (it aborts when memory runs out).
        let _ = write!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
    }

    fn end_family(&mut self) {
        if self.samples == 0 {
            self.out.truncate(self.start);
        }
    }

    fn finish(mut self) {
        self.end_family();
    }

    fn sample(&mut self, labels: &[(&str, Label)], value: Value) {
        self.samples += 1;
        let out = &mut *self.out;
        out.extend_from_slice(self.name.as_bytes());
        let mut sep = b'{';
        for &(name, value) in labels {
            out.push(sep);
            sep = b',';
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"=\"");
            match value {
                Label::Str(s) => escape_label(s, out),
                Label::Int(n) => {
                    let _ = write!(out, "{n}");
                }
            }
            out.push(b'"');
        }
        if sep == b',' {
            out.push(b'}');
        }
        out.push(b' ');
        let _ = match value {
            Value::Int(n) => write!(out, "{n}"),
            // Rust prints the shortest decimal that reads back the same, without exponent;
            // our values come from integers, but a NaN would break the scrape.
            Value::Float(f) if f.is_finite() => write!(out, "{f}"),
            Value::Float(_) => write!(out, "0"),
        };
        out.push(b'\n');
    }
}

/// A label value as the text format wants it: `\`, `"` and newline escaped.
fn escape_label(s: &str, out: &mut Vec<u8>) {
    let bytes = s.as_bytes();
    let mut from = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escaped: &[u8] = match b {
            b'\\' => b"\\\\",
            b'"' => b"\\\"",
            b'\n' => b"\\n",
            _ => continue,
        };
        out.extend_from_slice(&bytes[from..i]);
        out.extend_from_slice(escaped);
        from = i + 1;
    }
    out.extend_from_slice(&bytes[from..]);
}

#[derive(Serialize)]
struct JsonSnapshot<'a> {
    zone: JsonZone<'a>,
    locations: Locations<'a>,
    workers: Workers<'a>,
}

#[derive(Serialize)]
struct JsonZone<'a> {
    name: &'a str,
    size_bytes: u64,
    slots: u64,
    slots_used: u64,
    overflow: u64,
}

/// Counter sets, sorted, as `{"<location>":{"<topic>":{...}}}`.
struct Locations<'a>(&'a [&'a CounterSet]);

impl Serialize for Locations<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let mut map = ser.serialize_map(None)?;
        for sets in self.0.chunk_by(|a, b| a.location == b.location) {
            map.serialize_entry(&sets[0].location, &Topics(sets))?;
        }
        map.end()
    }
}

struct Topics<'a>(&'a [&'a CounterSet]);

impl Serialize for Topics<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        ser.collect_map(self.0.iter().map(|c| {
            (
                &c.topic,
                JsonCounters {
                    requests: Requests(&c.requests),
                    accepted_bytes: c.bytes,
                    delivered: c.delivered,
                    failed: c.failed,
                },
            )
        }))
    }
}

#[derive(Serialize)]
struct JsonCounters<'a> {
    requests: Requests<'a>,
    accepted_bytes: u64,
    delivered: u64,
    failed: u64,
}

/// Every result, zero or not, so that clients find each key.
struct Requests<'a>(&'a [u64; RESULTS.len()]);

impl Serialize for Requests<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        ser.collect_map(RESULTS.iter().zip(self.0))
    }
}

struct Workers<'a>(&'a [WorkerGauges]);

impl Serialize for Workers<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        ser.collect_seq(self.0.iter().map(|w| JsonWorker {
            worker: w.worker,
            pid: w.pid,
            state: w.state.name(),
            queue: JsonQueue {
                messages: w.queue_messages,
                bytes: w.queue_bytes,
                max_messages: w.queue_max_messages,
                max_bytes: w.queue_max_bytes,
            },
            in_flight: w.in_flight,
            last_error: w.last_error.as_ref().map(|e| JsonLastError {
                name: &e.name,
                time: e.time,
            }),
            spool: w.spool.map(JsonSpool::from),
            brokers: Brokers(&w.brokers),
        }))
    }
}

#[derive(Serialize)]
struct JsonWorker<'a> {
    worker: u32,
    pid: i32,
    state: &'static str,
    queue: JsonQueue,
    in_flight: u64,
    last_error: Option<JsonLastError<'a>>,
    spool: Option<JsonSpool>,
    brokers: Brokers<'a>,
}

#[derive(Serialize)]
struct JsonQueue {
    messages: u64,
    bytes: u64,
    max_messages: u64,
    max_bytes: u64,
}

#[derive(Serialize)]
struct JsonLastError<'a> {
    name: &'a str,
    time: u64,
}

/// Named like the Prometheus families, without `nginx_kafka_spool_` and `_total`.
#[derive(Serialize)]
struct JsonSpool {
    bytes: u64,
    files: u64,
    journaled: u64,
    spooled: u64,
    replayed: u64,
    dead_letter: u64,
    refused: u64,
    corrupt: u64,
    torn: u64,
    adopted: u64,
    syncs: u64,
}

impl From<SpoolGauges> for JsonSpool {
    fn from(s: SpoolGauges) -> Self {
        JsonSpool {
            bytes: s.bytes,
            files: s.files,
            journaled: s.journaled,
            spooled: s.spooled,
            replayed: s.replayed,
            dead_letter: s.dead,
            refused: s.refused,
            corrupt: s.corrupt,
            torn: s.torn,
            adopted: s.adopted,
            syncs: s.syncs,
        }
    }
}

struct Brokers<'a>(&'a [Broker]);

impl Serialize for Brokers<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        ser.collect_seq(self.0.iter().map(|b| JsonBroker {
            name: &b.name,
            node_id: b.node_id,
            state: &b.state,
            up: b.up(),
            rtt_seconds: b.rtt_us as f64 / 1e6,
            throttle_seconds: b.throttle_ms as f64 / 1e3,
            request_errors: b.request_errors,
        }))
    }
}

#[derive(Serialize)]
struct JsonBroker<'a> {
    name: &'a str,
    node_id: i32,
    state: &'a str,
    up: bool,
    rtt_seconds: f64,
    throttle_seconds: f64,
    request_errors: u64,
}

#[cfg(test)]
mod tests {
    use super::super::{LastError, ZoneUsage, ACCEPTED};
    use super::*;

    fn set(location: &str, topic: &str, requests: &[(usize, u64)]) -> CounterSet {
        let mut c = CounterSet {
            location: location.into(),
            topic: topic.into(),
            ..CounterSet::default()
        };
        for &(i, n) in requests {
            c.requests[i] = n;
        }
        c
    }

    fn broker(name: &str, node_id: i32, state: &str) -> Broker {
        Broker {
            name: name.into(),
            node_id,
            state: state.into(),
            rtt_us: 123,
            throttle_ms: 5,
            request_errors: 7,
        }
    }

    /// Every kind of sample: sets with and without a topic, odd label values, two workers of
    /// the same number (a reload), one with brokers and a last error, one without.
    fn rich() -> Snapshot {
        let mut events = set("ingest", "events", &[(ACCEPTED, 1000), (10, 3)]);
        events.bytes = 123_456;
        events.delivered = 990;
        events.failed = 7;
        Snapshot {
            zone: ZoneUsage {
                name: "kafka".into(),
                size_bytes: 1 << 20,
                slots: 4000,
                slots_used: 5,
                overflow: 2,
            },
            counters: vec![
                set("ingest", "", &[(3, 4), (4, 9)]),
                events,
                set("ingest", "idle", &[]),
                set("other", "other", &[(ACCEPTED, 2)]),
                set("we\"ird\\loc\nation", "t", &[(1, 1)]),
            ],
            sites: vec![{
                let mut shop = set("\x01sites", "shop", &[(ACCEPTED, 7), (16, 2)]);
                shop.bytes = 700;
                shop
            }],
            workers: vec![
                WorkerGauges {
                    worker: 0,
                    pid: 4242,
                    state: ProducerState::Up,
                    queue_messages: 12,
                    queue_bytes: 3400,
                    queue_max_messages: 100_000,
                    queue_max_bytes: 1 << 30,
                    in_flight: 15,
                    last_error: Some(LastError {
                        name: "MSG_TIMED_OUT".into(),
                        time: 1_700_000_000,
                    }),
                    brokers: vec![
                        broker("127.0.0.1:9092/1", 1, "UP"),
                        broker("127.0.0.1:9092/bootstrap", -1, "APIVERSION_QUERY"),
                    ],
                    spool: Some(spool()),
                },
                WorkerGauges {
                    worker: 0,
                    pid: 4300,
                    state: ProducerState::Exiting,
                    ..WorkerGauges::default()
                },
            ],
        }
    }

    fn spool() -> SpoolGauges {
        SpoolGauges {
            bytes: 5 << 20,
            files: 3,
            journaled: 1000,
            spooled: 40,
            replayed: 30,
            dead: 2,
            refused: 1,
            corrupt: 4,
            torn: 5,
            adopted: 6,
            syncs: 12,
        }
    }

    fn prom(s: &Snapshot) -> String {
        let mut out = Vec::new();
        prometheus(s, &mut out);
        String::from_utf8(out).unwrap()
    }

    fn json_of(s: &Snapshot) -> String {
        let mut out = Vec::new();
        json(s, &mut out);
        String::from_utf8(out).unwrap()
    }

    const FAMILIES: [&str; 34] = [
        "nginx_kafka_requests_total",
        "nginx_kafka_accepted_bytes_total",
        "nginx_kafka_delivered_total",
        "nginx_kafka_failed_total",
        "nginx_kafka_zone_size_bytes",
        "nginx_kafka_zone_slots",
        "nginx_kafka_zone_slots_used",
        "nginx_kafka_zone_overflow_total",
        "nginx_kafka_producer_state",
        "nginx_kafka_producer_up",
        "nginx_kafka_queue_messages",
        "nginx_kafka_queue_bytes",
        "nginx_kafka_queue_max_messages",
        "nginx_kafka_queue_max_bytes",
        "nginx_kafka_in_flight_messages",
        "nginx_kafka_last_delivery_error_timestamp_seconds",
        "nginx_kafka_spool_bytes",
        "nginx_kafka_spool_files",
        "nginx_kafka_spool_journaled_total",
        "nginx_kafka_spool_spooled_total",
        "nginx_kafka_spool_replayed_total",
        "nginx_kafka_spool_dead_letter_total",
        "nginx_kafka_spool_refused_total",
        "nginx_kafka_spool_corrupt_total",
        "nginx_kafka_spool_torn_total",
        "nginx_kafka_spool_adopted_total",
        "nginx_kafka_spool_syncs_total",
        "nginx_kafka_broker_up",
        "nginx_kafka_broker_state",
        "nginx_kafka_broker_rtt_seconds",
        "nginx_kafka_broker_throttle_seconds",
        "nginx_kafka_broker_request_errors_total",
        "nginx_kafka_site_events_total",
        "nginx_kafka_site_accepted_bytes_total",
    ];

    /// Checks the text format's grammar as Prometheus reads it, and returns the families in
    /// order of appearance with their samples (the part after the metric name).
    fn families(text: &str) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        let mut lines = text.lines().peekable();
        assert!(text.is_empty() || text.ends_with('\n'));
        while let Some(line) = lines.next() {
            let help = line.strip_prefix("# HELP ").expect(line);
            let (name, help) = help.split_once(' ').unwrap();
            assert!(!help.is_empty() && !help.contains('\\'));
            let ty = lines.next().unwrap();
            let kind = ty.strip_prefix(&format!("# TYPE {name} ")).expect(ty);
            assert!(kind == "counter" || kind == "gauge", "{ty}");
            assert_eq!(kind == "counter", name.ends_with("_total"), "{name}");
            assert!(out.iter().all(|(n, _)| n != name), "{name} twice");
            let mut samples = Vec::new();
            while let Some(line) = lines.next_if(|l| !l.starts_with('#')) {
                let rest = line.strip_prefix(name).expect(line);
                let (labels, value) = rest.rsplit_once(' ').unwrap();
                assert!(labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')));
                let v: f64 = value.parse().expect(value);
                assert!(
                    v.is_finite() && v >= 0.0 && !value.contains(['e', 'E']),
                    "{line}"
                );
                assert!(!samples.contains(&labels.to_owned()), "duplicate {line}");
                samples.push(rest.to_owned());
            }
            assert!(!samples.is_empty(), "{name} has no samples");
            out.push((name.to_owned(), samples));
        }
        out
    }

    fn samples<'a>(f: &'a [(String, Vec<String>)], name: &str) -> Vec<&'a str> {
        f.iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s.iter().map(String::as_str).collect())
            .unwrap_or_default()
    }

    #[test]
    fn families_come_once_in_order() {
        let f = families(&prom(&rich()));
        let names: Vec<&str> = f.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, FAMILIES);
    }

    #[test]
    fn requests_show_accepted_always_and_other_results_when_not_zero() {
        let f = families(&prom(&rich()));
        assert_eq!(
            samples(&f, "nginx_kafka_requests_total"),
            [
                r#"{location="ingest",topic="",result="no_topic"} 4"#,
                r#"{location="ingest",topic="",result="invalid_topic"} 9"#,
                r#"{location="ingest",topic="events",result="accepted"} 1000"#,
                r#"{location="ingest",topic="events",result="busy"} 3"#,
                r#"{location="ingest",topic="idle",result="accepted"} 0"#,
                r#"{location="other",topic="other",result="accepted"} 2"#,
                r#"{location="we\"ird\\loc\nation",topic="t",result="accepted"} 0"#,
                r#"{location="we\"ird\\loc\nation",topic="t",result="method_not_allowed"} 1"#,
            ]
        );
    }

    #[test]
    fn per_topic_counters_skip_the_empty_topic() {
        let f = families(&prom(&rich()));
        assert_eq!(
            samples(&f, "nginx_kafka_accepted_bytes_total"),
            [
                r#"{location="ingest",topic="events"} 123456"#,
                r#"{location="ingest",topic="idle"} 0"#,
                r#"{location="other",topic="other"} 0"#,
                r#"{location="we\"ird\\loc\nation",topic="t"} 0"#,
            ]
        );
        assert_eq!(
            samples(&f, "nginx_kafka_delivered_total")[0],
            r#"{location="ingest",topic="events"} 990"#
        );
        assert_eq!(
            samples(&f, "nginx_kafka_failed_total")[0],
            r#"{location="ingest",topic="events"} 7"#
        );
    }

    #[test]
    fn zone_gauges() {
        let f = families(&prom(&rich()));
        assert_eq!(
            samples(&f, "nginx_kafka_zone_size_bytes"),
            [r#"{zone="kafka"} 1048576"#]
        );
        assert_eq!(
            samples(&f, "nginx_kafka_zone_slots"),
            [r#"{zone="kafka"} 4000"#]
        );
        assert_eq!(
            samples(&f, "nginx_kafka_zone_slots_used"),
            [r#"{zone="kafka"} 5"#]
        );
        assert_eq!(
            samples(&f, "nginx_kafka_zone_overflow_total"),
            [r#"{zone="kafka"} 2"#]
        );
    }

    #[test]
    fn worker_gauges() {
        let f = families(&prom(&rich()));
        let states = samples(&f, "nginx_kafka_producer_state");
        assert_eq!(states.len(), 2 * ProducerState::ALL.len());
        assert_eq!(
            states[..5],
            [
                r#"{worker="0",pid="4242",state="starting"} 0"#,
                r#"{worker="0",pid="4242",state="up"} 1"#,
                r#"{worker="0",pid="4242",state="down"} 0"#,
                r#"{worker="0",pid="4242",state="exiting"} 0"#,
                r#"{worker="0",pid="4242",state="failed"} 0"#,
            ]
        );
        assert_eq!(states[8], r#"{worker="0",pid="4300",state="exiting"} 1"#);
        assert_eq!(
            samples(&f, "nginx_kafka_producer_up"),
            [
                r#"{worker="0",pid="4242"} 1"#,
                r#"{worker="0",pid="4300"} 0"#
            ]
        );
        for (name, v) in [
            ("nginx_kafka_queue_messages", "12"),
            ("nginx_kafka_queue_bytes", "3400"),
            ("nginx_kafka_queue_max_messages", "100000"),
            ("nginx_kafka_queue_max_bytes", "1073741824"),
            ("nginx_kafka_in_flight_messages", "15"),
        ] {
            let want = [
                format!(r#"{{worker="0",pid="4242"}} {v}"#),
                r#"{worker="0",pid="4300"} 0"#.into(),
            ];
            assert_eq!(samples(&f, name), want, "{name}");
        }
        assert_eq!(
            samples(&f, "nginx_kafka_last_delivery_error_timestamp_seconds"),
            [r#"{worker="0",pid="4242",error="MSG_TIMED_OUT"} 1700000000"#]
        );
    }

    #[test]
    fn spool_gauges_of_workers_with_a_spool() {
        let f = families(&prom(&rich()));
        // The worker of pid 4300 has no spool: no samples.
        for (name, v) in [
            ("nginx_kafka_spool_bytes", "5242880"),
            ("nginx_kafka_spool_files", "3"),
            ("nginx_kafka_spool_journaled_total", "1000"),
            ("nginx_kafka_spool_spooled_total", "40"),
            ("nginx_kafka_spool_replayed_total", "30"),
            ("nginx_kafka_spool_dead_letter_total", "2"),
            ("nginx_kafka_spool_refused_total", "1"),
            ("nginx_kafka_spool_corrupt_total", "4"),
            ("nginx_kafka_spool_torn_total", "5"),
            ("nginx_kafka_spool_adopted_total", "6"),
            ("nginx_kafka_spool_syncs_total", "12"),
        ] {
            assert_eq!(
                samples(&f, name),
                [format!(r#"{{worker="0",pid="4242"}} {v}"#)],
                "{name}"
            );
        }
        // Two workers with a spool, one of them with nothing counted yet.
        let mut s = rich();
        s.workers[1].spool = Some(SpoolGauges::default());
        let f = families(&prom(&s));
        assert_eq!(
            samples(&f, "nginx_kafka_spool_adopted_total"),
            [
                r#"{worker="0",pid="4242"} 6"#,
                r#"{worker="0",pid="4300"} 0"#
            ]
        );
        // No spool anywhere: no spool families at all.
        let mut s = rich();
        s.workers[0].spool = None;
        let text = prom(&s);
        assert!(!text.contains("nginx_kafka_spool_"), "{text}");
    }

    /// `promtool check metrics` (Prometheus's parser and linter) on every kind of sample,
    /// where it is installed (`apt install prometheus`; the integration tests require it).
    #[test]
    fn promtool_reads_it_cleanly() {
        use std::io::Write as _;
        use std::process::{Command, Stdio};
        let Ok(mut child) = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        else {
            eprintln!("promtool not found: skipped");
            return;
        };
        let mut s = rich();
        s.workers[1].spool = Some(SpoolGauges::default());
        let text = prom(&s);
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(text.as_bytes()).unwrap();
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        let said = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && said.is_empty(), "{said}\n{text}");
    }

    #[test]
    fn broker_gauges() {
        let f = families(&prom(&rich()));
        let b1 = r#"{worker="0",pid="4242",broker="127.0.0.1:9092/1",node_id="1""#;
        let b2 = r#"{worker="0",pid="4242",broker="127.0.0.1:9092/bootstrap",node_id="-1""#;
        assert_eq!(
            samples(&f, "nginx_kafka_broker_up"),
            [format!("{b1}}} 1"), format!("{b2}}} 0")]
        );
        assert_eq!(
            samples(&f, "nginx_kafka_broker_state"),
            [
                format!(r#"{b1},state="UP"}} 1"#),
                format!(r#"{b2},state="APIVERSION_QUERY"}} 1"#)
            ]
        );
        assert_eq!(
            samples(&f, "nginx_kafka_broker_rtt_seconds")[0],
            format!("{b1}}} 0.000123")
        );
        assert_eq!(
            samples(&f, "nginx_kafka_broker_throttle_seconds")[0],
            format!("{b1}}} 0.005")
        );
        assert_eq!(
            samples(&f, "nginx_kafka_broker_request_errors_total")[1],
            format!("{b2}}} 7")
        );
    }

    #[test]
    fn empty_families_are_left_out() {
        // Nothing counted yet: only the zone's families.
        let f = families(&prom(&Snapshot::default()));
        let names: Vec<&str> = f.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, FAMILIES[4..8]);
        assert_eq!(samples(&f, "nginx_kafka_zone_slots"), [r#"{zone=""} 0"#]);
        // Refusals without a topic only, and a worker without brokers or errors.
        let s = Snapshot {
            counters: vec![set("a", "", &[(3, 1)])],
            workers: vec![WorkerGauges::default()],
            ..Snapshot::default()
        };
        let f = families(&prom(&s));
        let names: Vec<&str> = f.iter().map(|(n, _)| n.as_str()).collect();
        let mut want = vec![FAMILIES[0]];
        want.extend(&FAMILIES[4..15]);
        assert_eq!(names, want);
    }

    #[test]
    fn extreme_values_stay_parseable() {
        let mut s = rich();
        let b = &mut s.workers[0].brokers[0];
        b.rtt_us = u64::MAX;
        b.throttle_ms = u64::MAX;
        b.request_errors = u64::MAX;
        b.node_id = i32::MIN;
        s.workers[0].pid = i32::MIN;
        s.workers[0].worker = u32::MAX;
        let text = prom(&s);
        families(&text);
        assert!(text.contains(r#"{worker="4294967295",pid="-2147483648",broker="127.0.0.1:9092/1",node_id="-2147483648"} 18446744073709551615"#));
        assert!(text.contains("} 18446744073709.55\n"), "{text}");
        let v: serde_json::Value = serde_json::from_str(&json_of(&s)).unwrap();
        assert_eq!(v["workers"][0]["brokers"][0]["request_errors"], u64::MAX);
    }

    #[test]
    fn escapes_label_values() {
        let mut out = Vec::new();
        escape_label("plain", &mut out);
        escape_label("a\\b\"c\nd\re\u{e9}", &mut out);
        assert_eq!(out, "plaina\\\\b\\\"c\\nd\re\u{e9}".as_bytes());
    }

    #[test]
    fn appends_to_what_is_there() {
        let mut out = b"before\n".to_vec();
        prometheus(&rich(), &mut out);
        assert!(out.starts_with(b"before\n# HELP nginx_kafka_requests_total "));
        let mut out = b"x".to_vec();
        prometheus(&Snapshot::default(), &mut out);
        assert!(out.starts_with(b"x# HELP nginx_kafka_zone_size_bytes "));
        let mut out = b"[".to_vec();
        json(&Snapshot::default(), &mut out);
        assert!(out.starts_with(b"[{\"zone\""));
    }

    #[test]
    fn site_families() {
        let f = families(&prom(&rich()));
        assert_eq!(
            samples(&f, "nginx_kafka_site_events_total"),
            [
                r#"{site="shop",result="accepted"} 7"#,
                r#"{site="shop",result="forbidden_origin"} 2"#
            ]
        );
        assert_eq!(
            samples(&f, "nginx_kafka_site_accepted_bytes_total"),
            [r#"{site="shop"} 700"#]
        );
        // Sites are not locations.
        assert!(!prom(&rich()).contains("\\x01"));
    }

    #[test]
    fn json_form() {
        let s = Snapshot {
            zone: ZoneUsage {
                name: "kafka".into(),
                size_bytes: 65536,
                slots: 100,
                slots_used: 2,
                overflow: 0,
            },
            counters: vec![set("in", "", &[(3, 2)]), {
                let mut c = set("in", "ev", &[(ACCEPTED, 5)]);
                c.bytes = 50;
                c.delivered = 4;
                c.failed = 1;
                c
            }],
            sites: vec![],
            workers: vec![WorkerGauges {
                worker: 1,
                pid: 77,
                state: ProducerState::Down,
                queue_messages: 1,
                queue_bytes: 2,
                queue_max_messages: 3,
                queue_max_bytes: 4,
                in_flight: 5,
                last_error: Some(LastError {
                    name: "_TRANSPORT".into(),
                    time: 9,
                }),
                brokers: vec![broker("h:9092/1", 1, "DOWN")],
                spool: Some(SpoolGauges {
                    dead: 11,
                    ..spool()
                }),
            }],
        };
        let zeros = |first: u64| {
            let mut r = format!(r#""accepted":{first}"#);
            for name in &RESULTS[1..] {
                r += &format!(
                    r#","{name}":{}"#,
                    if *name == "no_topic" && first == 0 {
                        2
                    } else {
                        0
                    }
                );
            }
            r
        };
        let want = format!(
            concat!(
                r#"{{"zone":{{"name":"kafka","size_bytes":65536,"slots":100,"slots_used":2,"overflow":0}},"#,
                r#""locations":{{"in":{{"":{{"requests":{{{}}},"accepted_bytes":0,"delivered":0,"failed":0}},"#,
                r#""ev":{{"requests":{{{}}},"accepted_bytes":50,"delivered":4,"failed":1}}}}}},"#,
                r#""workers":[{{"worker":1,"pid":77,"state":"down","queue":{{"messages":1,"bytes":2,"#,
                r#""max_messages":3,"max_bytes":4}},"in_flight":5,"last_error":{{"name":"_TRANSPORT","time":9}},"#,
                r#""spool":{{"bytes":5242880,"files":3,"journaled":1000,"spooled":40,"replayed":30,"#,
                r#""dead_letter":11,"refused":1,"corrupt":4,"torn":5,"adopted":6,"syncs":12}},"#,
                r#""brokers":[{{"name":"h:9092/1","node_id":1,"state":"DOWN","up":false,"#,
                r#""rtt_seconds":0.000123,"throttle_seconds":0.005,"request_errors":7}}]}}]}}"#
            ),
            zeros(0),
            zeros(5)
        );
        assert_eq!(json_of(&s), want);
        let empty = r#"{"zone":{"name":"","size_bytes":0,"slots":0,"slots_used":0,"overflow":0},"locations":{},"workers":[]}"#;
        assert_eq!(json_of(&Snapshot::default()), empty);
    }

    #[test]
    fn json_groups_locations_and_reads_back() {
        let mut s = rich();
        s.counters.reverse();
        s.workers[1].last_error = None;
        let v: serde_json::Value = serde_json::from_str(&json_of(&s)).unwrap();
        let locations = v["locations"].as_object().unwrap();
        assert_eq!(locations.len(), 3);
        assert_eq!(locations["ingest"].as_object().unwrap().len(), 3);
        assert_eq!(locations["ingest"]["events"]["requests"]["busy"], 3);
        assert_eq!(locations["ingest"][""]["requests"]["invalid_topic"], 9);
        assert_eq!(
            locations["we\"ird\\loc\nation"]["t"]["requests"]
                .as_object()
                .unwrap()
                .len(),
            RESULTS.len()
        );
        assert_eq!(v["workers"][0]["last_error"]["name"], "MSG_TIMED_OUT");
        assert!(v["workers"][1]["last_error"].is_null());
        assert_eq!(v["workers"][0]["spool"]["dead_letter"], 2);
        assert_eq!(v["workers"][0]["spool"].as_object().unwrap().len(), 11);
        assert!(v["workers"][1]["spool"].is_null());
        assert_eq!(v["workers"][1]["state"], "exiting");
        assert_eq!(v["workers"][0]["brokers"][1]["node_id"], -1);
    }

    #[test]
    fn many_counter_sets() {
        let mut s = rich();
        s.counters = (0..2000)
            .map(|i| {
                set(
                    &format!("loc{}", i / 20),
                    &format!("topic{}", i % 20),
                    &[(ACCEPTED, i)],
                )
            })
            .collect();
        s.counters
            .sort_by(|a, b| (&a.location, &a.topic).cmp(&(&b.location, &b.topic)));
        let f = families(&prom(&s));
        assert_eq!(samples(&f, "nginx_kafka_requests_total").len(), 2000);
        let v: serde_json::Value = serde_json::from_str(&json_of(&s)).unwrap();
        assert_eq!(v["locations"].as_object().unwrap().len(), 100);
    }
}
