//! Per-worker state: the producer, its hookup to nginx's event loop, and the flush on exit.
//!
//! Threading model: librdkafka runs its own threads for the network, but every delivery
//! report, log line and error is queued on the producer's main queue, and only this worker's
//! thread serves that queue (`queue.rs`), a bounded amount per event-loop turn. librdkafka
//! signals a non-empty queue by writing to an eventfd that nginx watches like any socket
//! (`wakeup.rs`); a timer (`timer.rs`) covers anything missed.
//!
//! Exit: a worker that is told to quit (reload, `nginx -s quit`) keeps its event loop running
//! until what it accepted is delivered, or `kafka_flush_timeout` has passed and the rest is
//! purged and logged: its timer is not cancelable while messages are in flight, so nginx
//! waits for it. Because the event loop runs, a later TERM still reaches the worker, which
//! then finishes within the master's kill window (`stop`).

mod acks;
mod commit;
mod msk_iam;
mod queue;
mod send;
mod spooling;
mod timer;
mod topics;
mod wakeup;

pub use acks::Outcome;

use std::cell::RefCell;
use std::time::{Duration, Instant};

use ngx::core::Status;
use ngx::ffi::{
    ngx_current_msec, ngx_cycle_t, ngx_event_t, ngx_exiting, ngx_http_request_t, ngx_log_t,
    ngx_msec_t, ngx_terminate, ngx_uint_t,
};
use ngx::http::HttpModuleMainConf;
use rdkafka::bindings as rdsys;
use rdkafka::client::ClientContext;
use rdkafka::producer::{BaseProducer, Producer, ProducerContext};
use rdkafka::types::RDKafkaRespErr;

use crate::conf::{Delivery, LocationConf};
use crate::delivery::{LogRef, Report, Reports, Route};
use crate::http::Rejection;
use crate::metrics::stats::Stats;
use crate::metrics::zone::BYTES;
use crate::metrics::{Broker, LastError, ProducerState, WorkerGauges, ACCEPTED};
use crate::spool::files::{now_ms, Kind};
use crate::spool::format::Record;
use crate::topics::{Found, Registry, Step};
use crate::Module;
use acks::Ack;
use queue::{Budget, MainQueue, Sink};
use send::Message;
use spooling::{Kept, Spooling};
use topics::{Lookups, Topic, Waiter};
use wakeup::Wakeup;

/// How often the timer serves the queue, in milliseconds; faster while exiting.
const TICK_MS: ngx_msec_t = 1000;
const EXIT_TICK_MS: ngx_msec_t = 20;
/// On a fast shutdown (TERM) the master kills workers about 1.5 s later: flush for at most
/// this long, then purge and log what is left, within `TERMINATE_TOTAL`.
const TERMINATE_FLUSH: Duration = Duration::from_millis(400);
const TERMINATE_TOTAL: Duration = Duration::from_millis(1200);
/// Readiness asks for a new topic list when the last one is older than this.
const READY_TOPICS_MS: u64 = 5000;
/// How often replay hands records to the producer while it has any.
const REPLAY_TICK_MS: ngx_msec_t = 10;

thread_local! {
    static WORKER: RefCell<Option<Worker>> = const { RefCell::new(None) };
}

/// Why a message was not queued.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("the producer queue is full")]
    QueueFull,
    #[error("the message is larger than message.max.bytes")]
    TooLarge,
    #[error("the topic does not exist")]
    UnknownTopic,
    #[error("kafka_max_topics topics are in use")]
    TooManyTopics,
    #[error("too many new topics are being looked up")]
    TooManyLookups,
    #[error("no producer runs in this worker")]
    NoProducer,
    #[error("the worker has no valid MSK IAM token")]
    NoToken,
    #[error("the spool cannot take the event")]
    SpoolFull,
    #[error("{0}")]
    Kafka(String),
}

/// What became of an event handed to the producer.
pub enum Produced {
    /// Queued for delivery.
    Queued,
    /// Written to the spool, for replay (the producer's queue was full).
    Spooled,
    /// Queued; the request waits for the delivery report (`kafka_delivery acked`), which
    /// answers it through `crate::http::answer_acked`.
    Waiting,
    /// Waiting for the cluster to say whether its topic exists; the request is resumed
    /// (`crate::http::resume`) when it does.
    Parked,
}

/// The producer's context. Its callbacks are never used: the worker serves the main queue
/// itself (`queue.rs`); `LogRef` is each message's opaque.
pub struct Context;

impl ClientContext for Context {}

impl ProducerContext for Context {
    type DeliveryOpaque = LogRef;
    fn delivery(&self, _: &rdkafka::producer::DeliveryResult<'_>, _: LogRef) {}
}

/// What a message that needs more than its route carries as its opaque: the journal record
/// it resolves (durable), the replayed record it resolves, the request waiting for it.
struct Ticket {
    route: *const Route,
    journal: u32,
    replay: u32,
    ack: Option<Ack>,
}

impl Ticket {
    /// The opaque: the boxed ticket's address with its lowest bit set (a `Route`'s is even).
    fn into_opaque(self: Box<Ticket>) -> *mut core::ffi::c_void {
        (Box::into_raw(self) as usize | 1) as *mut core::ffi::c_void
    }

    /// The route and ticket of a message's opaque, the ticket taken back.
    ///
    /// # Safety
    /// `opaque` is a message's opaque, set by `produce` or `replay`, read once.
    unsafe fn from_opaque(opaque: usize) -> (*const Route, Option<Box<Ticket>>) {
        if opaque & 1 == 0 {
            return (opaque as *const Route, None);
        }
        // SAFETY: made by `into_opaque`, reclaimed once (the caller's contract).
        let t = unsafe { Box::from_raw((opaque & !1) as *mut Ticket) };
        (t.route, Some(t))
    }
}

/// An event, as the handler hands it over.
pub struct Event<'a> {
    /// Checked to be a legal topic name (so ASCII) by the caller.
    pub topic: &'a [u8],
    pub key: Option<&'a [u8]>,
    pub value: &'a [u8],
    pub headers: &'a [(&'a [u8], Option<&'a [u8]>)],
}

struct Worker {
    // Fields drop in this order: the lookup thread ends, librdkafka stops writing the
    // eventfd, nginx stops watching it, the events leave nginx's queues, the topic handles
    // go, then the producer.
    lookups: Lookups,
    queue: MainQueue,
    _wakeup: Wakeup,
    tick: timer::Event,
    more: timer::Event,
    replay: timer::Event,
    /// `kafka_spool`: its replay topic handles go before the producer.
    spooling: Option<Spooling>,
    topics: Registry<Topic, Waiter>,
    /// `kafka_msk_iam`: lets go of the producer before it goes.
    msk_iam: Option<msk_iam::MskIam>,
    producer: BaseProducer<Context>,
    reports: Reports,
    /// The last statistics librdkafka reported.
    stats: Option<Stats>,
    /// For the gauges: nginx's worker number and this process's id.
    number: u32,
    pid: i32,
    /// Readiness: the topics that ingest locations name without variables, and whether
    /// topics are looked up (auto-creation off).
    fixed_topics: Vec<String>,
    lookups_enabled: bool,
    flush_timeout: ngx_msec_t,
    /// `queue.buffering.max.messages`: what the producer's queue holds.
    max_messages: u64,
    /// When the exit flush started (reload, quit) and whether what was left got purged.
    exit: Option<Exit>,
    /// Deliveries per second (a moving average), and since when no broker is up: for the
    /// Retry-After of refusals.
    rate: f64,
    rate_at: (u64, u64),
    down_since: Option<u64>,
}

struct Exit {
    deadline: ngx_msec_t,
    queued: u64,
    purged: bool,
}

/// The location a message comes from: its configuration (its counters' label) and its
/// error log (where the message's failure is logged).
pub struct From<'a> {
    pub location: &'a LocationConf,
    pub log: *mut ngx_log_t,
}

/// Queues one message on this worker's producer; never blocks. A topic this worker has not
/// used yet is looked up first: the request `r` is then parked until the answer comes.
pub fn produce(
    from: &From<'_>,
    event: &Event<'_>,
    r: *mut ngx_http_request_t,
) -> Result<Produced, SendError> {
    with_worker(|w| w.produce(from, event, r)).unwrap_or(Err(SendError::NoProducer))
}

fn with_worker<T>(f: impl FnOnce(&mut Worker) -> T) -> Option<T> {
    WORKER.with(|w| w.try_borrow_mut().ok()?.as_mut().map(f))
}

fn classify(error: RDKafkaRespErr) -> SendError {
    use RDKafkaRespErr::*;
    match error {
        RD_KAFKA_RESP_ERR__QUEUE_FULL => SendError::QueueFull,
        RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE => SendError::TooLarge,
        RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC | RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART => {
            SendError::UnknownTopic
        }
        other => SendError::Kafka(format!("{other:?}")),
    }
}

/// The events of one turn, handed to the worker's parts.
struct Turn<'a> {
    reports: &'a mut Reports,
    stats: &'a mut Option<Stats>,
    spooling: Option<&'a mut Spooling>,
    msk_iam: Option<&'a msk_iam::MskIam>,
    /// Waiting requests to answer once the worker is no longer borrowed.
    answers: Vec<(Ack, Outcome)>,
}

impl Turn<'_> {
    fn resolve(&mut self, id: u32, copied: bool) {
        if let (Some(s), true) = (self.spooling.as_deref_mut(), id != 0) {
            s.store.resolve(id, copied);
        }
    }
}

impl Sink for Turn<'_> {
    fn token_refresh(&mut self) {
        if let Some(iam) = self.msk_iam {
            iam.refresh_requested();
        }
    }

    fn delivery(&mut self, report: &Report<'_>) {
        // SAFETY: the opaque was set by `produce` or `replay`, and each report is read once.
        let (route, ticket) = unsafe { Ticket::from_opaque(report.opaque) };
        // SAFETY: routes live as long as their topic handles, which outlive their messages.
        let route = unsafe { &*route };
        self.reports.on_delivery(route, report);
        let (journal, replay, ack) = match ticket {
            Some(t) => (t.journal, t.replay, t.ack),
            None => (0, 0, None),
        };
        if report.error.is_none() {
            if let Some(ack) = ack {
                self.answers.push((ack, Outcome::Acked));
            }
            self.resolve(journal, false);
            self.resolve(replay, false);
            return;
        }
        // A client still waiting is told, and retries: the event is its own again.
        if let Some(ack) = ack {
            if ack.waiting() {
                self.answers.push((ack, Outcome::NotDelivered));
                return;
            }
        }
        let kept = match self.spooling.as_deref_mut() {
            Some(s) => s.keep(report, replay != 0),
            None => Kept::Refused,
        };
        if kept == Kept::Refused {
            self.reports.log_failure(route, report);
        }
        self.resolve(journal, kept != Kept::Refused);
        self.resolve(replay, kept != Kept::Refused);
    }

    fn log(&mut self, level: i32, facility: &str, message: &str) {
        self.reports.on_log(level, facility, message);
    }

    fn error(&mut self, fatal: bool, name: &str, reason: &str) {
        self.reports.on_error(fatal, name, reason);
    }

    fn stats(&mut self, json: &[u8]) {
        match crate::metrics::stats::parse(json) {
            Ok(stats) => *self.stats = Some(stats),
            Err(reason) => crate::delivery::log_limited(
                crate::log::NGX_LOG_WARN as ngx_uint_t,
                cycle_log(),
                &format!("librdkafka statistics not understood: {reason}"),
            ),
        }
    }
}

impl Worker {
    fn rk(&self) -> *mut rdsys::rd_kafka_t {
        self.producer.client().native_ptr()
    }

    fn in_flight(&self) -> u64 {
        self.producer.in_flight_count().max(0) as u64
    }

    fn produce(
        &mut self,
        from: &From<'_>,
        event: &Event<'_>,
        r: *mut ngx_http_request_t,
    ) -> Result<Produced, SendError> {
        if self.msk_iam.as_ref().is_some_and(|iam| !iam.valid()) {
            return Err(SendError::NoToken);
        }
        let topic = event.topic;
        let t = match self.topics.handle(topic) {
            Some(t) => t,
            None => {
                // A name is text only on this slow path: the lookup and the logs need it.
                let name = std::str::from_utf8(topic).map_err(|_| SendError::UnknownTopic)?;
                if !self.new_topic(name, r)? {
                    return Ok(Produced::Parked);
                }
                self.topics.handle(topic).ok_or(SendError::TooManyTopics)?
            }
        };
        let route = t.route(core::ptr::from_ref(from.location) as usize, || Route {
            log: from.log,
            set: crate::counters::topic_set(&from.location.scope, topic),
        });
        let rkt = t.as_ptr();
        // SAFETY: the route lives as long as the topic handle (see `Topic::route`).
        let set = unsafe { (*route).set };
        let rk = self.rk();
        let message = Message {
            key: event.key,
            value: event.value,
            headers: event.headers,
            timestamp_ms: 0,
        };
        // `fsync=batch`: a durable answer waits for the sync of its record.
        let mut synced: Option<Ack> = None;
        let produced = match from.location.delivery() {
            Delivery::Queued => {
                send::send(rk, rkt, &message, route.cast_mut().cast()).map(|()| Produced::Queued)
            }
            Delivery::Durable => {
                if self.spooling.as_ref().is_some_and(|sp| sp.batch) {
                    synced = Some(
                        Ack::new(r, from.location.ack_timeout, crate::http::answer_acked)
                            .ok_or(SendError::Kafka("no memory".into()))?,
                    );
                }
                self.produce_durable(route, rkt, event, &message)
                    .inspect_err(|_| {
                        if let Some(ack) = synced.take() {
                            ack.cancel();
                        }
                    })?
            }
            Delivery::Acked => {
                let ack = Ack::new(r, from.location.ack_timeout, crate::http::answer_acked)
                    .ok_or(SendError::Kafka("no memory".into()))?;
                let ticket = Box::new(Ticket {
                    route,
                    journal: 0,
                    replay: 0,
                    ack: Some(ack),
                });
                let opaque = ticket.into_opaque();
                send::send(rk, rkt, &message, opaque)
                    .map(|()| Produced::Waiting)
                    .inspect_err(|_| {
                        // SAFETY: librdkafka did not take the message: the ticket is ours.
                        let (_, t) = unsafe { Ticket::from_opaque(opaque as usize) };
                        if let Some(ack) = t.and_then(|t| t.ack) {
                            ack.cancel();
                        }
                    })
            }
        };
        let produced = match produced {
            Ok(p) => p,
            Err(code) => {
                let e = classify(code);
                // The producer's queue is full: the spool takes the event, if there is one.
                if matches!(e, SendError::QueueFull)
                    && from.location.delivery() == Delivery::Queued
                    && self.spool_event(event, b"_QUEUE_FULL")
                {
                    Produced::Spooled
                } else {
                    let refused = match e {
                        SendError::QueueFull => Some(Rejection::QueueFull),
                        SendError::TooLarge => Some(Rejection::TooLarge),
                        _ => None,
                    };
                    if let (Some(set), Some(refused)) = (set, refused) {
                        set.add(refused.result(), 1);
                    }
                    if let Some(ack) = synced {
                        ack.cancel();
                    }
                    return Err(e);
                }
            }
        };
        // An acknowledged event is counted when it is answered (`crate::http::answer_acked`).
        let answered_later = matches!(produced, Produced::Waiting) || synced.is_some();
        if let (Some(set), false) = (set, answered_later) {
            set.add(ACCEPTED, 1);
            set.add(
                BYTES,
                (event.value.len() + event.key.map_or(0, <[u8]>::len)) as u64,
            );
        }
        if !matches!(produced, Produced::Spooled) {
            self.reports.accepted += 1;
            if self.tick.cancelable() {
                // Something is in flight: an exiting worker must wait for it.
                self.tick.set_cancelable(false);
            }
        }
        if let Some(ack) = synced {
            if let Some(sp) = self.spooling.as_mut() {
                if let Some(c) = sp.commit.as_mut() {
                    c.wait(ack, &mut sp.store);
                    return Ok(Produced::Waiting);
                }
            }
            ack.cancel();
        }
        Ok(produced)
    }

    /// `kafka_delivery durable`: the event is written to the journal first, then queued;
    /// its delivery report resolves the journal record. Refused when the journal cannot
    /// take it; spooled when the producer cannot.
    fn produce_durable(
        &mut self,
        route: *const Route,
        rkt: *mut rdsys::rd_kafka_topic_t,
        event: &Event<'_>,
        message: &Message<'_>,
    ) -> Result<Result<Produced, RDKafkaRespErr>, SendError> {
        let rk = self.rk();
        let Some(sp) = self.spooling.as_mut() else {
            return Err(SendError::SpoolFull);
        };
        if sp.batch && sp.commit.is_none() {
            return Err(SendError::SpoolFull);
        }
        let record = Record {
            flags: 0,
            timestamp_ms: now_ms() as i64,
            reason: b"",
            topic: event.topic,
            key: event.key,
            headers: event.headers.to_vec(),
            value: event.value,
        };
        let journal = match sp.store.append(Kind::Journal, &record) {
            Ok(id) => id,
            Err(e) => {
                sp.refused(&e);
                return Err(SendError::SpoolFull);
            }
        };
        let ticket = Box::new(Ticket {
            route,
            journal,
            replay: 0,
            ack: None,
        });
        let opaque = ticket.into_opaque();
        let Err(code) = send::send(rk, rkt, message, opaque) else {
            return Ok(Ok(Produced::Queued));
        };
        // SAFETY: librdkafka did not take the message: the ticket is ours again.
        drop(unsafe { Ticket::from_opaque(opaque as usize) });
        if code != RDKafkaRespErr::RD_KAFKA_RESP_ERR__QUEUE_FULL {
            // Refused for good (too large...): the client is told; the record is not needed.
            sp.store.resolve(journal, false);
            return Ok(Err(code));
        }
        let record = Record {
            reason: b"_QUEUE_FULL",
            ..record
        };
        // On disk either way: copied to the spool, or left in the journal, which then stays
        // until this worker exits and is replayed whole by the next.
        if sp.store.append(Kind::Spool, &record).is_ok() {
            sp.store.resolve(journal, true);
        }
        Ok(Ok(Produced::Spooled))
    }

    /// Writes an event the producer could not take to the spool; false without one, or when
    /// it is full.
    fn spool_event(&mut self, event: &Event<'_>, reason: &[u8]) -> bool {
        let Some(sp) = self.spooling.as_mut() else {
            return false;
        };
        let record = Record {
            flags: 0,
            timestamp_ms: now_ms() as i64,
            reason,
            topic: event.topic,
            key: event.key,
            headers: event.headers.to_vec(),
            value: event.value,
        };
        match sp.store.append(Kind::Spool, &record) {
            Ok(_) => true,
            Err(e) => {
                sp.refused(&e);
                false
            }
        }
    }

    /// Hands spooled records to the producer, oldest first, at `replay_rate`, while a broker
    /// is up and the producer's queue is less than half full (live events come first).
    fn replay_turn(&mut self) {
        let up = self.exit.is_none() && matches!(self.state(), ProducerState::Up);
        let rk = self.rk();
        let Some(sp) = self.spooling.as_mut() else {
            return;
        };
        if !up || !sp.store.replay_pending() {
            return;
        }
        let queued = self.producer.in_flight_count().max(0) as u64;
        let limit = self.stats.as_ref().map_or(100_000, |s| s.msg_max.max(1));
        if queued * 2 >= limit {
            return;
        }
        let budget = sp.replay_budget();
        if budget == 0 {
            return;
        }
        let route: *const Route = &raw const *sp.replay_route;
        let topics = &mut sp.replay_topics;
        // Records whose topic no producer can take (a name that is not one): dead letters.
        let mut dead = crate::spool::format::file_header().to_vec();
        let mut dead_ids = Vec::new();
        let handed = sp.store.replay(budget, |record, id| {
            let name = std::str::from_utf8(record.topic).ok();
            let legal = name.is_some_and(|n| crate::record::is_legal_topic(n.as_bytes()));
            if !topics.contains_key(record.topic) {
                match name.filter(|_| legal).and_then(|n| Topic::new(rk, n)) {
                    Some(t) => {
                        topics.insert(record.topic.to_vec(), t);
                    }
                    None => {
                        record.encode(&mut dead);
                        dead_ids.push(id);
                        return true;
                    }
                }
            }
            let rkt = topics[record.topic].as_ptr();
            let ticket = Box::new(Ticket {
                route,
                journal: 0,
                replay: id,
                ack: None,
            });
            let opaque = ticket.into_opaque();
            let message = Message {
                key: record.key,
                value: record.value,
                headers: &record.headers,
                timestamp_ms: record.timestamp_ms,
            };
            match send::send(rk, rkt, &message, opaque) {
                Ok(()) => true,
                Err(_) => {
                    // SAFETY: librdkafka did not take the message: the ticket is ours.
                    drop(unsafe { Ticket::from_opaque(opaque as usize) });
                    false
                }
            }
        });
        sp.spend(handed);
        let records = crate::spool::format::scan(&dead);
        for (item, id) in records.zip(dead_ids) {
            if let crate::spool::format::Item::Record { record, .. } = item {
                if sp.store.append_dead(&record).is_ok() {
                    sp.store.resolve(id, true);
                }
            }
        }
        self.reports.accepted += handed as u64;
        if handed > 0 {
            self.tick.set_cancelable(false);
        }
    }

    /// A topic this worker has no handle for: true once it has one, false when the request
    /// was parked until the cluster's topic list arrives.
    fn new_topic(&mut self, topic: &str, r: *mut ngx_http_request_t) -> Result<bool, SendError> {
        // SAFETY: nginx's cached time, read on the worker thread.
        let now = unsafe { ngx_current_msec } as u64;
        let mut step = self.topics.step(topic.as_bytes(), now);
        if step == Step::Lookup {
            // A recent topic list answers at once; otherwise fetch one and wait for it. With
            // no lookup thread, accept, and let the producer find out.
            let known = match self.lookups.known(topic, now) {
                None if self.lookups.refresh() => None,
                None => Some(true),
                known => known,
            };
            if let Some(exists) = known {
                let found = self.found(topic, exists);
                drop(self.topics.resolved(topic.as_bytes(), found, now));
                step = self.topics.step(topic.as_bytes(), now);
            }
        }
        match step {
            Step::Ready => {}
            Step::Missing => return Err(SendError::UnknownTopic),
            Step::TooMany => return Err(SendError::TooManyTopics),
            Step::Busy => return Err(SendError::TooManyLookups),
            Step::Create => {
                let t = Topic::new(self.rk(), topic).ok_or(SendError::UnknownTopic)?;
                self.topics.insert(topic.as_bytes(), t);
            }
            Step::Lookup | Step::Wait => {
                let waiter = Waiter::new(r).ok_or(SendError::Kafka("no memory".into()))?;
                if self.topics.park(topic.as_bytes(), waiter).is_err() {
                    return Err(SendError::Kafka("lookup lost".into()));
                }
                // A lookup is running: an exiting worker waits for it.
                self.tick.set_cancelable(false);
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// One event-loop turn's share of the queue; posts itself again if more is waiting.
    /// Returns the requests whose topic lookup finished, to be resumed by the caller once
    /// the worker is no longer borrowed.
    fn turn(&mut self) -> Resume {
        let mut stats = None;
        let mut turn = Turn {
            reports: &mut self.reports,
            stats: &mut stats,
            spooling: self.spooling.as_mut(),
            msk_iam: self.msk_iam.as_ref(),
            answers: Vec::new(),
        };
        if self.queue.serve(&mut turn, Budget::TURN) {
            self.more.post_next();
        }
        let answers = turn.answers;
        if stats.is_some() {
            self.stats = stats;
            self.publish();
            let down = matches!(self.state(), ProducerState::Down);
            match (down, self.down_since) {
                (true, None) => self.down_since = Some(now_ms()),
                (false, Some(_)) => self.down_since = None,
                _ => {}
            }
        }
        Resume {
            waiters: self.topic_answers(),
            answers,
        }
    }

    fn state(&self) -> ProducerState {
        match &self.stats {
            _ if self.exit.is_some() => ProducerState::Exiting,
            None => ProducerState::Starting,
            Some(s) if s.brokers.iter().any(Broker::up) => ProducerState::Up,
            Some(_) => ProducerState::Down,
        }
    }

    /// Publishes this worker's gauges to the metrics zone, if there is one.
    fn publish(&self) {
        if !crate::counters::enabled() {
            return;
        }
        let stats = self.stats.clone().unwrap_or_default();
        crate::counters::publish(&WorkerGauges {
            worker: self.number,
            pid: self.pid,
            state: self.state(),
            queue_messages: stats.msg_cnt,
            queue_bytes: stats.msg_size,
            queue_max_messages: stats.msg_max,
            queue_max_bytes: stats.msg_size_max,
            in_flight: self.in_flight(),
            last_error: self
                .reports
                .last_error
                .as_ref()
                .map(|(name, time)| LastError {
                    name: name.clone(),
                    time: *time,
                }),
            brokers: stats.brokers,
            spool: self.spooling.as_ref().map(|sp| {
                let c = sp.store.counts;
                crate::metrics::SpoolGauges {
                    bytes: sp.store.dir_bytes(),
                    files: sp.store.files() as u64,
                    journaled: c.journaled,
                    spooled: c.spooled,
                    replayed: c.replayed,
                    dead: c.dead,
                    refused: c.refused,
                    corrupt: c.corrupt,
                    torn: c.torn,
                    adopted: c.adopted,
                    syncs: c.syncs,
                }
            }),
        });
    }

    /// Whether this worker can take events: a broker connection is up and the fixed topics
    /// exist. Otherwise a reason code and a sentence.
    fn readiness(&mut self) -> Result<(), (&'static str, String)> {
        if let Some(iam) = self.msk_iam.as_ref().filter(|iam| !iam.valid()) {
            return Err((
                "no_token",
                format!("no valid MSK IAM token: {}", iam.reason()),
            ));
        }
        match self.state() {
            ProducerState::Up => {}
            ProducerState::Exiting => {
                return Err(("exiting", "this worker is shutting down".into()));
            }
            ProducerState::Starting | ProducerState::Failed => {
                return Err(("starting", "the producer has not reported yet".into()));
            }
            ProducerState::Down => {
                return Err(("no_broker", "no broker connection is up".into()));
            }
        }
        if !self.lookups_enabled {
            return Ok(());
        }
        // SAFETY: nginx's cached time, read on the worker thread.
        let now = unsafe { ngx_current_msec } as u64;
        let mut stale = false;
        let mut result = Ok(());
        for topic in &self.fixed_topics {
            match self.lookups.listed(topic, now) {
                None => {
                    stale = true;
                    result = Err(("starting", "the topic list has not arrived yet".into()));
                    break;
                }
                Some((listed, age)) => {
                    stale |= age >= READY_TOPICS_MS;
                    if !listed {
                        result =
                            Err(("unknown_topic", format!("topic \"{topic}\" does not exist")));
                        break;
                    }
                }
            }
        }
        if stale {
            // The next probe gets a newer answer.
            self.lookups.refresh();
        }
        result
    }

    /// Settles the names that waited for the cluster's topic list, once it arrived.
    fn topic_answers(&mut self) -> Vec<Waiter> {
        // SAFETY: nginx's cached time, read on the worker thread.
        let now = unsafe { ngx_current_msec } as u64;
        let Some(answer) = self.lookups.poll(now) else {
            return Vec::new();
        };
        let mut resume = Vec::new();
        for name in self.topics.checking() {
            let text = String::from_utf8_lossy(&name).into_owned();
            let exists = match &answer {
                Ok(()) => self.lookups.known(&text, now).unwrap_or(false),
                Err(reason) => {
                    // The producer will find out: a missing topic fails its events, logged.
                    crate::delivery::log_limited(
                        crate::log::NGX_LOG_WARN as ngx_uint_t,
                        cycle_log(),
                        &format!("topic \"{text}\" could not be checked, accepted: {reason}"),
                    );
                    true
                }
            };
            let found = self.found(&text, exists);
            resume.extend(self.topics.resolved(&name, found, now));
        }
        resume
    }

    fn found(&self, name: &str, exists: bool) -> Found<Topic> {
        match exists.then(|| Topic::new(self.rk(), name)).flatten() {
            Some(t) => Found::Exists(t),
            None => Found::Missing,
        }
    }

    fn tick(&mut self) -> Resume {
        let resume = self.turn();
        crate::delivery::flush_repeats();
        let (now, delivered) = (now_ms(), self.reports.delivered_ok);
        let (at, before) = self.rate_at;
        if now > at {
            let recent = (delivered - before) as f64 * 1000.0 / (now - at) as f64;
            self.rate = 0.7 * self.rate + 0.3 * recent;
            self.rate_at = (now, delivered);
        }
        if let Some(iam) = &self.msk_iam {
            for news in iam.news() {
                notice!(
                    cycle_log(),
                    "kafka_msk_iam: a token from {}, valid until {}",
                    news.source,
                    crate::aws::credentials::iso_time(news.expires_ms / 1000)
                );
            }
        }
        let mut period = TICK_MS;
        if let Some(sp) = self.spooling.as_mut() {
            sp.tick();
            period = period.min(sp.fsync_ms().unwrap_or(TICK_MS));
            if sp.store.replay_pending() && self.exit.is_none() {
                // The replay event is cancelable: it never keeps an exiting worker alive.
                self.replay.arm(REPLAY_TICK_MS);
            }
        }
        // SAFETY: nginx's flag, read on the worker thread.
        if unsafe { ngx_exiting } != 0 {
            self.exit_tick();
        }
        self.publish();
        let idle = self.in_flight() == 0 && !self.lookups.pending();
        self.tick.set_cancelable(idle);
        self.tick.arm(if self.exit.is_some() && !idle {
            EXIT_TICK_MS
        } else {
            period
        });
        resume
    }

    /// While nginx is shutting this worker down gracefully: deliver, and past the flush
    /// timeout purge what is left so that its reports (failures, logged) come back.
    fn exit_tick(&mut self) {
        // SAFETY: nginx's cached time, read on the worker thread.
        let now = unsafe { ngx_current_msec };
        let in_flight = self.in_flight();
        if self.exit.is_none() {
            notice!(
                cycle_log(),
                "kafka: flushing {} queued events before exit, for up to {} ms",
                in_flight,
                self.flush_timeout
            );
        }
        let timeout = self.flush_timeout;
        let exit = self.exit.get_or_insert(Exit {
            deadline: now.wrapping_add(timeout),
            queued: in_flight,
            purged: false,
        });
        if in_flight == 0 || exit.purged {
            return;
        }
        if now.wrapping_sub(exit.deadline) < ngx_msec_t::MAX / 2 {
            exit.purged = true;
            purge(self.rk());
        } else {
            // Send what waits for linger.ms now; never serves the queue itself.
            // SAFETY: a live producer handle; a zero timeout does not block.
            unsafe { rdsys::rd_kafka_flush(self.rk(), 0) };
        }
    }

    /// Serves everything waiting, with no budget: only when the worker exits. Requests
    /// still waiting for an acknowledgement get none: their connections end with the
    /// process.
    fn serve_all(&mut self) {
        let mut stats = None;
        let mut turn = Turn {
            reports: &mut self.reports,
            stats: &mut stats,
            spooling: self.spooling.as_mut(),
            msk_iam: self.msk_iam.as_ref(),
            answers: Vec::new(),
        };
        self.queue.serve(&mut turn, Budget::UNBOUNDED);
        for (ack, _) in turn.answers {
            ack.cancel();
        }
    }

    /// Finishes synchronously, for at most `flush` then `total`: delivers what it can, then
    /// purges, serving every report so that each failure is logged.
    fn finish(&mut self, flush: Duration, total: Duration) -> bool {
        let start = Instant::now();
        while self.in_flight() > 0 && start.elapsed() < flush {
            self.serve_all();
            // SAFETY: a live producer handle; waits up to 10 ms, serves nothing itself.
            unsafe { rdsys::rd_kafka_flush(self.rk(), 10) };
        }
        let flushed = self.in_flight() == 0;
        if !flushed {
            purge(self.rk());
        }
        while start.elapsed() < total {
            self.serve_all();
            if self.in_flight() == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        self.serve_all();
        // The process is ending: requests still waiting for a topic get no answer (their
        // connections close with it); none of them was answered 2xx.
        drop(self.topics.take_waiters());
        self.topics.clear();
        flushed
    }
}

fn purge(rk: *mut rdsys::rd_kafka_t) {
    // SAFETY: a live producer handle. Purged messages come back as failed reports.
    unsafe {
        rdsys::rd_kafka_purge(
            rk,
            rdsys::RD_KAFKA_PURGE_F_QUEUE | rdsys::RD_KAFKA_PURGE_F_INFLIGHT,
        )
    };
}

fn cycle_log() -> *mut ngx_log_t {
    // SAFETY: `ngx_cycle` is the current cycle on the worker thread.
    unsafe { (*ngx::ffi::ngx_cycle).log }
}

/// What a turn leaves to do once the worker is no longer borrowed: requests whose topic
/// lookup finished (they produce through the worker), and requests whose acknowledgement
/// came (answering may run subrequests that do).
struct Resume {
    waiters: Vec<Waiter>,
    answers: Vec<(Ack, Outcome)>,
}

fn resume(resume: Option<Resume>) {
    let Some(resume) = resume else {
        return;
    };
    for (ack, outcome) in resume.answers {
        ack.answer(outcome);
    }
    for w in resume.waiters {
        w.resume(crate::http::resume);
    }
}

extern "C" fn on_wakeup(ev: *mut ngx_event_t) {
    Wakeup::drain(ev);
    resume(with_worker(Worker::turn));
}

extern "C" fn on_synced(ev: *mut ngx_event_t) {
    Wakeup::drain(ev);
    let answers = with_worker(|w| {
        let mut answers = Vec::new();
        if let Some(sp) = w.spooling.as_mut() {
            if let Some(c) = sp.commit.as_mut() {
                c.committed(&mut sp.store, &mut answers);
            }
        }
        answers
    });
    resume(answers.map(|answers| Resume {
        waiters: Vec::new(),
        answers,
    }));
}

extern "C" fn on_replay(_: *mut ngx_event_t) {
    with_worker(|w| {
        w.replay_turn();
        let pending = w
            .spooling
            .as_ref()
            .is_some_and(|s| s.store.replay_pending());
        if pending && w.exit.is_none() {
            w.replay.arm(REPLAY_TICK_MS);
        }
    });
}

extern "C" fn on_more(_: *mut ngx_event_t) {
    resume(with_worker(Worker::turn));
}

extern "C" fn on_tick(_: *mut ngx_event_t) {
    resume(with_worker(Worker::tick));
}

/// Starts this worker's producer. A producer that cannot start is logged; the worker then
/// answers 503 rather than exiting, which would make the master respawn it in a loop.
pub fn start(cycle: &mut ngx_cycle_t) -> Status {
    let Some(mcf) = Module::main_conf(cycle) else {
        return Status::NGX_OK;
    };
    if !mcf.ingest {
        return Status::NGX_OK;
    }
    let log = cycle.log;
    let producer: BaseProducer<Context> = match mcf.producer_config().create_with_context(Context) {
        Ok(p) => p,
        Err(e) => {
            log_at!(
                crate::log::NGX_LOG_EMERG,
                log,
                "kafka: producer not started: {e}"
            );
            crate::counters::publish(&WorkerGauges {
                // SAFETY: plain reads of nginx's process globals.
                worker: unsafe { ngx::ffi::ngx_worker } as u32,
                pid: unsafe { ngx::ffi::ngx_pid },
                state: ProducerState::Failed,
                ..WorkerGauges::default()
            });
            return Status::NGX_OK;
        }
    };
    // SAFETY: the producer outlives the queue (field order in `Worker`).
    let queue = unsafe { MainQueue::of(producer.client().native_ptr()) };
    let Some(wakeup) = Wakeup::new(Some(on_wakeup), log) else {
        log_at!(
            crate::log::NGX_LOG_EMERG,
            log,
            "kafka: no eventfd connection for the producer"
        );
        return Status::NGX_ERROR;
    };
    queue.notify(wakeup.fd());
    let mut tick = timer::Event::new(Some(on_tick), log);
    tick.set_cancelable(true);
    tick.arm(TICK_MS);

    notice!(
        log,
        "kafka: producer started, brokers \"{}\"",
        mcf.brokers.as_deref().unwrap_or_default()
    );
    let lookups_enabled = !mcf
        .options
        .iter()
        .any(|(n, v)| n == "allow.auto.create.topics" && matches!(v.as_str(), "true" | "1"));
    // SAFETY: the producer outlives the lookups (field order in `Worker`), which write to
    // the eventfd only until they are dropped, before it is closed.
    let mut lookups = unsafe { Lookups::start(producer.client().native_ptr(), wakeup.fd()) };
    if lookups_enabled {
        // Learn the topics early, so that the first requests need not wait.
        lookups.refresh();
    }
    let worker = Worker {
        lookups,
        queue,
        _wakeup: wakeup,
        tick,
        more: timer::Event::new(Some(on_more), log),
        replay: {
            let mut replay = timer::Event::new(Some(on_replay), log);
            replay.set_cancelable(true);
            replay
        },
        spooling: mcf.spool.as_ref().map(|conf| {
            // SAFETY: a plain read of nginx's process global.
            Spooling::new(
                conf,
                unsafe { ngx::ffi::ngx_pid } as u32,
                Some(on_synced),
                log,
            )
        }),
        topics: Registry::new(mcf.max_topics, lookups_enabled),
        // SAFETY: the producer outlives the token thread's hold on it (field order).
        msk_iam: mcf.msk_iam.as_ref().map(|c| unsafe {
            msk_iam::MskIam::start(
                producer.client().native_ptr(),
                c.region.clone(),
                c.env.clone(),
            )
        }),
        producer,
        reports: Reports::default(),
        stats: None,
        // SAFETY: plain reads of nginx's process globals.
        number: unsafe { ngx::ffi::ngx_worker } as u32,
        pid: unsafe { ngx::ffi::ngx_pid },
        fixed_topics: mcf.fixed_topics.clone(),
        lookups_enabled,
        flush_timeout: mcf.flush_timeout,
        max_messages: mcf
            .options
            .iter()
            .find(|(n, _)| n == "queue.buffering.max.messages")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(100_000),
        exit: None,
        rate: 0.0,
        rate_at: (now_ms(), 0),
        down_since: None,
    };
    WORKER.with(|w| *w.borrow_mut() = Some(worker));
    Status::NGX_OK
}

/// The `Retry-After` of a 503: at least `min` (`kafka_retry_after`), more when this worker's
/// queue takes longer to drain at the rate it delivers, or its brokers have been down for a
/// while (half the time they have been down); at most a minute.
pub fn retry_after(min: ngx::ffi::time_t) -> ngx::ffi::time_t {
    let derived = with_worker(|w| {
        let drain = w.in_flight() as f64 / w.rate.max(1.0);
        let down = w
            .down_since
            .map_or(0, |t| now_ms().saturating_sub(t) / 2000);
        drain.ceil().max(down as f64) as ngx::ffi::time_t
    })
    .unwrap_or(0);
    derived.clamp(min.max(1), 60.max(min))
}

/// Whether the producer's queue has room for `n` more messages now (a batch of
/// `kafka_collect` is queued whole or not at all).
pub fn has_room(n: u64) -> bool {
    with_worker(|w| w.in_flight() + n <= w.max_messages).unwrap_or(false)
}

/// Whether this worker's producer can take events, for `kafka_ready`: `Err` has a reason
/// code and a sentence.
pub fn readiness() -> Result<(), (&'static str, String)> {
    with_worker(Worker::readiness)
        .unwrap_or_else(|| Err(("no_producer", "no producer runs in this worker".into())))
}

/// Stops this worker's producer when the process exits. After a graceful exit the event loop
/// has already flushed; after TERM (or in a single process) this flushes for a bounded time,
/// then purges, and logs every event that was not delivered.
pub fn stop(cycle: &mut ngx_cycle_t) {
    let Some(mut worker) = WORKER.with(|w| w.borrow_mut().take()) else {
        return;
    };
    let log = cycle.log;
    // SAFETY: nginx's signal flags and cached time, read on the worker thread.
    let (terminating, now) = unsafe { (ngx_terminate != 0, ngx_current_msec) };
    let queued = worker
        .exit
        .as_ref()
        .map_or(worker.in_flight(), |e| e.queued);
    let (flush, total) = if terminating {
        (TERMINATE_FLUSH, TERMINATE_TOTAL)
    } else {
        let left = match &worker.exit {
            Some(exit) if exit.deadline.wrapping_sub(now) < ngx_msec_t::MAX / 2 => {
                exit.deadline - now
            }
            Some(_) => 0,
            None => worker.flush_timeout,
        };
        let flush = Duration::from_millis(left as u64);
        (flush, flush + Duration::from_millis(1000))
    };
    let flushed = worker.finish(flush, total);
    let left = worker.in_flight();
    if let Some(sp) = worker.spooling.as_mut() {
        sp.store.close();
        let c = sp.store.counts;
        if c.spooled + c.journaled + c.replayed + c.dead + c.adopted > 0 {
            notice!(
                log,
                "kafka: spool \"{}\": {} journaled, {} spooled, {} replayed, {} dead-lettered, \
                 {} files adopted, {} corrupt regions, {} torn tails",
                sp.dir(),
                c.journaled,
                c.spooled,
                c.replayed,
                c.dead,
                c.adopted,
                c.corrupt,
                c.torn
            );
        }
    }
    let reports = &worker.reports;
    notice!(
        log,
        "kafka: producer stopped: {} queued at exit, {}; {} delivered, {} not delivered{} in all",
        queued,
        if flushed && worker.exit.as_ref().is_none_or(|e| !e.purged) {
            "all flushed"
        } else {
            "flush timed out, the rest logged"
        },
        reports.delivered(left),
        reports.failed,
        if left > 0 {
            format!(", {left} unaccounted for")
        } else {
            String::new()
        },
    );
    crate::delivery::flush_repeats();
}

/// In a single process (`master_process off`), a reload builds a new configuration in the
/// same process: the old producer is stopped (flushed, what is left logged) and a new one
/// started from the new configuration.
pub fn reconfigure(cycle: &mut ngx_cycle_t) -> Status {
    let running = WORKER.with(|w| w.borrow().is_some());
    if running {
        stop(cycle);
    }
    // The counters move to the new configuration's zone (the same one, if it is reused).
    if crate::counters::enabled() {
        crate::counters::stop();
        crate::counters::start(cycle);
    }
    if running {
        start(cycle)
    } else {
        Status::NGX_OK
    }
}
