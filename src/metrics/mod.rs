//! Metrics: counters and gauges that every worker writes to one shared memory zone
//! (`zone.rs`), librdkafka's statistics (`stats.rs`), and the two forms the `kafka_metrics`
//! endpoint serves them in (`render.rs`: Prometheus text and JSON).
//!
//! Everything here is pure: the zone works on any memory it is given, so it is unit-tested
//! on the heap; nginx's shared memory is handed to it by the FFI edge (`crate::shm`).

pub mod render;
pub mod stats;
pub mod zone;

/// The `result` label values of `nginx_kafka_requests_total`: `accepted`, then one per
/// refusal, named as the JSON `error` code the client gets. The index is the counter's.
pub const RESULTS: [&str; 22] = [
    "accepted",
    "method_not_allowed",
    "empty_body",
    "no_topic",
    "invalid_topic",
    "topic_not_allowed",
    "unknown_topic",
    "too_many_topics",
    "bad_body",
    "too_large",
    "busy",
    "spool_full",
    "not_delivered",
    "ack_timeout",
    "unavailable",
    // `kafka_collect`.
    "unknown_key",
    "forbidden_origin",
    "no_origin",
    "rate_limited",
    "invalid_event",
    "too_many_events",
    "dnt",
];

/// Index of `accepted` in `RESULTS`.
pub const ACCEPTED: usize = 0;

/// A copy of the zone, taken to be rendered.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Snapshot {
    pub zone: ZoneUsage,
    /// One set per (location, topic) seen; sorted by location, then topic.
    pub counters: Vec<CounterSet>,
    /// One set per site of `kafka_sites` that counted something (`topic` is the site's id);
    /// sorted by id.
    pub sites: Vec<CounterSet>,
    /// One per live worker that publishes its gauges; sorted by worker number, then pid.
    pub workers: Vec<WorkerGauges>,
}

/// How full the shared memory zone is.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ZoneUsage {
    /// The zone's name (`kafka_metrics_zone`'s, for the log) and size in bytes.
    pub name: String,
    pub size_bytes: u64,
    /// Counter sets the zone can hold, and how many are in use.
    pub slots: u64,
    pub slots_used: u64,
    /// Requests counted in the `location="other",topic="other"` set because the zone was full.
    pub overflow: u64,
}

/// The counters of one location (its `kafka_status_zone` name) and topic.
///
/// `topic` is `""` for requests refused before a topic was known to exist (no topic, an
/// illegal or unknown one...), and `"other"` for topics past the location's cap.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct CounterSet {
    pub location: String,
    pub topic: String,
    /// Requests by result, indexed like `RESULTS`.
    pub requests: [u64; RESULTS.len()],
    /// Bytes of accepted events (value and key).
    pub bytes: u64,
    /// Events the brokers acknowledged.
    pub delivered: u64,
    /// Events that were accepted but not delivered (logged, or spooled).
    pub failed: u64,
}

/// What one worker's producer is doing.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum ProducerState {
    /// Started; no statistics yet.
    #[default]
    Starting,
    /// At least one broker connection is up.
    Up,
    /// No broker connection is up.
    Down,
    /// The worker is flushing before it exits.
    Exiting,
    /// The producer could not be started (the worker answers 503).
    Failed,
}

impl ProducerState {
    pub const ALL: [ProducerState; 5] = [
        ProducerState::Starting,
        ProducerState::Up,
        ProducerState::Down,
        ProducerState::Exiting,
        ProducerState::Failed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ProducerState::Starting => "starting",
            ProducerState::Up => "up",
            ProducerState::Down => "down",
            ProducerState::Exiting => "exiting",
            ProducerState::Failed => "failed",
        }
    }

    pub fn code(self) -> u32 {
        self as u32
    }

    pub fn from_code(code: u32) -> ProducerState {
        Self::ALL
            .get(code as usize)
            .copied()
            .unwrap_or(ProducerState::Starting)
    }
}

/// One worker's gauges.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct WorkerGauges {
    /// nginx's worker number (`ngx_worker`) and the process id: during a reload an old and
    /// a new worker share a number.
    pub worker: u32,
    pub pid: i32,
    pub state: ProducerState,
    /// Messages and bytes in the producer's queues (librdkafka's `msg_cnt`, `msg_size`),
    /// and their limits (`msg_max`, `msg_size_max`), from the last statistics.
    pub queue_messages: u64,
    pub queue_bytes: u64,
    pub queue_max_messages: u64,
    pub queue_max_bytes: u64,
    /// Messages not yet reported delivered or failed (`rd_kafka_outq_len`).
    pub in_flight: u64,
    /// The last delivery error: librdkafka's error name and when (Unix seconds).
    pub last_error: Option<LastError>,
    /// From the last statistics.
    pub brokers: Vec<Broker>,
    /// The worker's part of the `kafka_spool` directory; `None` without one.
    pub spool: Option<SpoolGauges>,
}

/// What one worker's spool holds and has done. The counts are this process's (the spool
/// store's `Counts`): they start from zero with each worker, like its other series.
///
/// Plain `u64`s in C layout: the zone copies it into shared memory as it is.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct SpoolGauges {
    /// Bytes in the spool directory as this worker last saw it (its last listing, plus what
    /// it wrote since): every worker's files, not only its own.
    pub bytes: u64,
    /// This worker's files holding records not yet resolved.
    pub files: u64,
    /// Records written to the journal (`durable` events) and to the spool.
    pub journaled: u64,
    pub spooled: u64,
    /// Records handed out for replay.
    pub replayed: u64,
    /// Records written to the dead-letter file.
    pub dead: u64,
    /// Appends refused: the cap, a full disk or an error.
    pub refused: u64,
    /// Damaged regions, and torn tails (a write cut short), skipped in files being replayed.
    pub corrupt: u64,
    pub torn: u64,
    /// Files of processes that are gone, taken over for replay.
    pub adopted: u64,
    /// Syncs of the worker's files to storage (`fsync`): one per period or per batch.
    pub syncs: u64,
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct LastError {
    pub name: String,
    pub time: u64,
}

/// One broker as a producer's statistics show it.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Broker {
    /// librdkafka's name for it, e.g. `127.0.0.1:9092/1`, and its node id (-1 for a
    /// bootstrap address not yet resolved to a node).
    pub name: String,
    pub node_id: i32,
    /// librdkafka's state: `UP`, `DOWN`, `INIT`, `CONNECT`, `AUTH`, `APIVERSION_QUERY`,
    /// `AUTH_HANDSHAKE`, `TRY_CONNECT`, `AUTH_REQ`...
    pub state: String,
    /// Average round-trip time over the last window, in microseconds (`rtt.avg`).
    pub rtt_us: u64,
    /// Average broker throttle time over the last window, in milliseconds (`throttle.avg`).
    pub throttle_ms: u64,
    /// Request errors since the producer started: `txerrs + rxerrs + req_timeouts`.
    pub request_errors: u64,
}

impl Broker {
    pub fn up(&self) -> bool {
        self.state == "UP"
    }
}
