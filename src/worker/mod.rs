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

mod queue;
mod timer;
mod wakeup;

use std::cell::RefCell;
use std::time::{Duration, Instant};

use ngx::core::Status;
use ngx::ffi::{
    ngx_current_msec, ngx_cycle_t, ngx_event_t, ngx_exiting, ngx_log_t, ngx_msec_t,
    ngx_terminate, ngx_uint_t,
};
use ngx::http::HttpModuleMainConf;
use rdkafka::bindings as rdsys;
use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};

use crate::delivery::{LogRef, Reports};
use crate::Module;
use queue::{Budget, MainQueue};
use timer::Event;
use wakeup::Wakeup;

/// How often the timer serves the queue, in milliseconds; faster while exiting.
const TICK_MS: ngx_msec_t = 1000;
const EXIT_TICK_MS: ngx_msec_t = 20;
/// On a fast shutdown (TERM) the master kills workers about 1.5 s later: flush for at most
/// this long, then purge and log what is left, within `TERMINATE_TOTAL`.
const TERMINATE_FLUSH: Duration = Duration::from_millis(400);
const TERMINATE_TOTAL: Duration = Duration::from_millis(1200);

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
    #[error("no producer runs in this worker")]
    NoProducer,
    #[error("{0}")]
    Kafka(KafkaError),
}

/// The producer's context. Its callbacks are never used: the worker serves the main queue
/// itself (`queue.rs`); `LogRef` is each message's opaque.
pub struct Context;

impl ClientContext for Context {}

impl ProducerContext for Context {
    type DeliveryOpaque = LogRef;
    fn delivery(&self, _: &rdkafka::producer::DeliveryResult<'_>, _: LogRef) {}
}

struct Worker {
    // Fields drop in this order: librdkafka stops writing the eventfd, nginx stops watching
    // it, the events leave nginx's queues, then the producer goes.
    queue: MainQueue,
    _wakeup: Wakeup,
    tick: Event,
    more: Event,
    producer: BaseProducer<Context>,
    reports: Reports,
    flush_timeout: ngx_msec_t,
    /// When the exit flush started (reload, quit) and whether what was left got purged.
    exit: Option<Exit>,
}

struct Exit {
    deadline: ngx_msec_t,
    queued: u64,
    purged: bool,
}

/// Queues one message on this worker's producer; never blocks.
pub fn send(
    topic: &str,
    key: Option<&[u8]>,
    value: &[u8],
    log: *mut ngx_log_t,
) -> Result<(), SendError> {
    with_worker(|w| {
        let mut record = BaseRecord::with_opaque_to(topic, log as LogRef).payload(value);
        if let Some(key) = key {
            record = record.key(key);
        }
        w.producer.send(record).map_err(|(e, _)| classify(e))?;
        w.reports.accepted += 1;
        if w.tick.cancelable() {
            // Something is in flight: an exiting worker must wait for it.
            w.tick.set_cancelable(false);
        }
        Ok(())
    })
    .unwrap_or(Err(SendError::NoProducer))
}

/// Writes a line that may repeat often (one per refused request) at most once per window.
pub fn log_limited(level: ngx_uint_t, log: *mut ngx_log_t, message: &str) {
    let written = with_worker(|w| w.reports.limited(level, log, message));
    if written.is_none() {
        // SAFETY: `log` is a valid log on the worker thread.
        unsafe { crate::log::write_line(level, log, format!("kafka: {message}").as_bytes()) };
    }
}

fn with_worker<T>(f: impl FnOnce(&mut Worker) -> T) -> Option<T> {
    WORKER.with(|w| w.try_borrow_mut().ok()?.as_mut().map(f))
}

fn classify(error: KafkaError) -> SendError {
    match error.rdkafka_error_code() {
        Some(RDKafkaErrorCode::QueueFull) => SendError::QueueFull,
        Some(RDKafkaErrorCode::MessageSizeTooLarge) => SendError::TooLarge,
        Some(RDKafkaErrorCode::UnknownTopic | RDKafkaErrorCode::UnknownTopicOrPartition) => {
            SendError::UnknownTopic
        }
        _ => SendError::Kafka(error),
    }
}

impl Worker {
    fn rk(&self) -> *mut rdsys::rd_kafka_t {
        self.producer.client().native_ptr()
    }

    fn in_flight(&self) -> u64 {
        self.producer.in_flight_count().max(0) as u64
    }

    /// One event-loop turn's share of the queue; posts itself again if more is waiting.
    fn turn(&mut self) {
        if self.queue.serve(&mut self.reports, Budget::TURN) {
            self.more.post_next();
        }
    }

    fn tick(&mut self) {
        self.turn();
        self.reports.flush_repeats();
        // SAFETY: nginx's flag, read on the worker thread.
        if unsafe { ngx_exiting } != 0 {
            self.exit_tick();
        }
        let idle = self.in_flight() == 0;
        self.tick.set_cancelable(idle);
        self.tick.arm(if self.exit.is_some() && !idle {
            EXIT_TICK_MS
        } else {
            TICK_MS
        });
    }

    /// While nginx is shutting this worker down gracefully: deliver, and past the flush
    /// timeout purge what is left so that its reports (failures, logged) come back.
    fn exit_tick(&mut self) {
        // SAFETY: nginx's cached time, read on the worker thread.
        let now = unsafe { ngx_current_msec };
        let in_flight = self.in_flight();
        if self.exit.is_none() {
            crate::notice!(
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
            self.turn();
        } else {
            // Send what waits for linger.ms now; never serves the queue itself.
            // SAFETY: a live producer handle; a zero timeout does not block.
            unsafe { rdsys::rd_kafka_flush(self.rk(), 0) };
        }
    }

    /// Finishes synchronously, for at most `flush` then `total`: delivers what it can, then
    /// purges, serving every report so that each failure is logged.
    fn finish(&mut self, flush: Duration, total: Duration) -> bool {
        let start = Instant::now();
        while self.in_flight() > 0 && start.elapsed() < flush {
            self.queue.serve(&mut self.reports, Budget::UNBOUNDED);
            // SAFETY: a live producer handle; waits up to 10 ms, serves nothing itself.
            unsafe { rdsys::rd_kafka_flush(self.rk(), 10) };
        }
        let flushed = self.in_flight() == 0;
        if !flushed {
            purge(self.rk());
        }
        while start.elapsed() < total {
            self.queue.serve(&mut self.reports, Budget::UNBOUNDED);
            if self.in_flight() == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        self.queue.serve(&mut self.reports, Budget::UNBOUNDED);
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

extern "C" fn on_wakeup(ev: *mut ngx_event_t) {
    Wakeup::drain(ev);
    with_worker(Worker::turn);
}

extern "C" fn on_more(_: *mut ngx_event_t) {
    with_worker(Worker::turn);
}

extern "C" fn on_tick(_: *mut ngx_event_t) {
    with_worker(Worker::tick);
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
            crate::log_at!(
                crate::log::NGX_LOG_EMERG,
                log,
                "kafka: producer not started: {e}"
            );
            return Status::NGX_OK;
        }
    };
    // SAFETY: the producer outlives the queue (field order in `Worker`).
    let queue = unsafe { MainQueue::of(producer.client().native_ptr()) };
    let Some(wakeup) = Wakeup::new(Some(on_wakeup), log) else {
        crate::log_at!(
            crate::log::NGX_LOG_EMERG,
            log,
            "kafka: no eventfd connection for the producer"
        );
        return Status::NGX_ERROR;
    };
    queue.notify(wakeup.fd());
    let mut tick = Event::new(Some(on_tick), log);
    tick.set_cancelable(true);
    tick.arm(TICK_MS);

    crate::notice!(
        log,
        "kafka: producer started, brokers \"{}\"",
        mcf.brokers.as_deref().unwrap_or_default()
    );
    let worker = Worker {
        queue,
        _wakeup: wakeup,
        tick,
        more: Event::new(Some(on_more), log),
        producer,
        reports: Reports::default(),
        flush_timeout: mcf.flush_timeout,
        exit: None,
    };
    WORKER.with(|w| *w.borrow_mut() = Some(worker));
    Status::NGX_OK
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
    let queued = worker.exit.as_ref().map_or(worker.in_flight(), |e| e.queued);
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
    let reports = &worker.reports;
    crate::notice!(
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
    worker.reports.flush_repeats();
}

/// In a single process (`master_process off`), a reload builds a new configuration in the
/// same process: the old producer is stopped (flushed, what is left logged) and a new one
/// started from the new configuration.
pub fn reconfigure(cycle: &mut ngx_cycle_t) -> Status {
    if WORKER.with(|w| w.borrow().is_none()) {
        return Status::NGX_OK;
    }
    stop(cycle);
    start(cycle)
}
