//! Per-worker state: the producer, its hookup to nginx's event loop, and the flush on exit.
//!
//! Threading model: librdkafka runs its own threads for the network, but every callback
//! (delivery reports, logs, errors) is queued on the producer's main queue, and only this
//! worker's thread polls that queue. librdkafka signals a non-empty queue by writing to an
//! eventfd that nginx watches like any socket; a cancelable timer covers anything missed.

use core::ffi::c_void;
use core::ptr;
use std::cell::RefCell;
use std::time::Duration;

use ngx::core::Status;
use ngx::ffi::{
    ngx_add_timer, ngx_close_connection, ngx_connection_t, ngx_cycle_t, ngx_del_timer, ngx_event_t,
    ngx_get_connection, ngx_handle_read_event, ngx_log_t, ngx_msec_t, ngx_terminate,
};
use ngx::http::HttpModuleMainConf;
use rdkafka::bindings as rdsys;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;

use crate::conf::MainConf;
use crate::delivery::{DeliveryReports, LogRef};
use crate::Module;

/// How often the safety timer serves the queue, in milliseconds.
const TICK_MS: ngx_msec_t = 1000;
/// On a fast shutdown (TERM) the master kills workers about 1.5 s later.
const TERMINATE_FLUSH_MS: ngx_msec_t = 1000;

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

/// Queues one message on this worker's producer; never blocks.
pub fn send(
    topic: &str,
    key: Option<&[u8]>,
    value: &[u8],
    log: *mut ngx_log_t,
) -> Result<(), SendError> {
    WORKER.with(|w| {
        let w = w.borrow();
        let Some(w) = w.as_ref() else {
            return Err(SendError::NoProducer);
        };
        let mut record = BaseRecord::with_opaque_to(topic, log as LogRef).payload(value);
        if let Some(key) = key {
            record = record.key(key);
        }
        w.producer.send(record).map_err(|(e, _)| classify(e))?;
        w.producer
            .context()
            .accepted
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    })
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

struct Worker {
    // Fields drop in this order: stop the wake-ups before the producer goes.
    wakeup: Wakeup,
    ticker: Ticker,
    producer: BaseProducer<DeliveryReports>,
    flush_timeout: ngx_msec_t,
}

/// The main queue's eventfd, registered with nginx as a connection.
struct Wakeup {
    queue: *mut rdsys::rd_kafka_queue_t,
    connection: *mut ngx_connection_t,
}

impl Drop for Wakeup {
    fn drop(&mut self) {
        // SAFETY: both were created in `start` and are released once, here.
        unsafe {
            rdsys::rd_kafka_queue_io_event_enable(self.queue, -1, ptr::null(), 0);
            rdsys::rd_kafka_queue_destroy(self.queue);
            ngx_close_connection(self.connection);
        }
    }
}

/// The cancelable safety timer: nginx does not wait for it on graceful shutdown.
struct Ticker(Box<ngx_event_t>);

impl Drop for Ticker {
    fn drop(&mut self) {
        if self.0.timer_set() != 0 {
            // SAFETY: the timer is armed in nginx's timer tree; remove it before freeing.
            unsafe { ngx_del_timer(&mut *self.0) };
        }
    }
}

impl Worker {
    /// Serves every event waiting on the main queue: delivery reports, logs, errors.
    fn serve(&self) {
        // Bounded, so that a flood of reports cannot starve nginx's other events.
        for _ in 0..100_000 {
            // SAFETY: `queue` is a live reference to the producer's main queue.
            if unsafe { rdsys::rd_kafka_queue_length(self.wakeup.queue) } == 0 {
                break;
            }
            self.producer.poll(Duration::ZERO);
        }
    }
}

fn client_config(mcf: &MainConf) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set(
        "bootstrap.servers",
        mcf.brokers.as_deref().unwrap_or_default(),
    );
    config.set("client.id", "nginx-kafka");
    // Failures only: a failed message is logged with its payload; successes are counted as
    // accepted less failed (delivery.rs). An operator may still set it back.
    config.set("delivery.report.only.error", "true");
    let mut level = RDKafkaLogLevel::Warning;
    for (name, value) in &mcf.options {
        config.set(name, value);
        if name == "debug" {
            level = RDKafkaLogLevel::Debug;
        }
    }
    config.set_log_level(level);
    config
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
    let producer: BaseProducer<DeliveryReports> =
        match client_config(mcf).create_with_context(DeliveryReports::default()) {
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

    // SAFETY: FFI calls with a live producer handle and nginx's own connection API, on the
    // worker thread after the event module has initialised.
    let wakeup = unsafe {
        let queue = rdsys::rd_kafka_queue_get_main(producer.client().native_ptr());
        let fd = libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC);
        if fd == -1 {
            rdsys::rd_kafka_queue_destroy(queue);
            crate::log_at!(crate::log::NGX_LOG_EMERG, log, "kafka: eventfd() failed");
            return Status::NGX_ERROR;
        }
        let connection = ngx_get_connection(fd, log);
        if connection.is_null() {
            libc::close(fd);
            rdsys::rd_kafka_queue_destroy(queue);
            return Status::NGX_ERROR;
        }
        let wakeup = Wakeup { queue, connection };
        let rev = (*connection).read;
        (*rev).handler = Some(on_wakeup);
        (*rev).log = log;
        (*connection).log = log;
        if ngx_handle_read_event(rev, 0) != Status::NGX_OK.0 {
            return Status::NGX_ERROR;
        }
        static ONE: u64 = 1;
        rdsys::rd_kafka_queue_io_event_enable(
            queue,
            fd,
            (&ONE as *const u64).cast::<c_void>(),
            size_of::<u64>(),
        );
        wakeup
    };

    // SAFETY: a zeroed event is nginx's initial state for a timer event.
    let mut timer: Box<ngx_event_t> = Box::new(unsafe { core::mem::zeroed() });
    timer.handler = Some(on_tick);
    timer.log = log;
    timer.set_cancelable(1);
    // SAFETY: the boxed event outlives its place in the timer tree (see `Ticker`).
    unsafe { ngx_add_timer(&mut *timer, TICK_MS) };

    crate::notice!(
        log,
        "kafka: producer started, brokers \"{}\"",
        mcf.brokers.as_deref().unwrap_or_default()
    );
    WORKER.with(|w| {
        *w.borrow_mut() = Some(Worker {
            wakeup,
            ticker: Ticker(timer),
            producer,
            flush_timeout: mcf.flush_timeout,
        })
    });
    Status::NGX_OK
}

extern "C" fn on_wakeup(ev: *mut ngx_event_t) {
    // SAFETY: nginx passes the read event of our eventfd connection.
    let fd = unsafe { (*(*ev).data.cast::<ngx_connection_t>()).fd };
    let mut buf = [0u8; 8];
    // SAFETY: reading 8 bytes from a non-blocking eventfd resets its counter.
    while unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
    WORKER.with(|w| {
        if let Some(w) = w.borrow().as_ref() {
            w.serve();
        }
    });
}

extern "C" fn on_tick(ev: *mut ngx_event_t) {
    WORKER.with(|w| {
        if let Some(w) = w.borrow().as_ref() {
            w.serve();
            w.producer.context().flush_repeats();
        }
    });
    // SAFETY: `ev` is the boxed timer owned by the worker, still alive while it fires.
    unsafe { ngx_add_timer(ev, TICK_MS) };
}

/// Flushes, for a bounded time, what this worker accepted; what is left is purged, and each
/// purged message is logged with its payload by its delivery report.
pub fn stop(cycle: &mut ngx_cycle_t) {
    let Some(worker) = WORKER.with(|w| w.borrow_mut().take()) else {
        return;
    };
    let log = cycle.log;
    let Worker {
        wakeup,
        ticker,
        producer,
        flush_timeout,
    } = worker;
    drop(ticker);
    drop(wakeup);

    // SAFETY: nginx's signal flags, read on the worker thread.
    let terminating = unsafe { ngx_terminate } != 0;
    let timeout = if terminating {
        flush_timeout.min(TERMINATE_FLUSH_MS)
    } else {
        flush_timeout
    };
    let queued = producer.in_flight_count();
    let flushed = producer
        .flush(Duration::from_millis(timeout as u64))
        .is_ok();
    if !flushed {
        producer.purge(rdkafka::producer::PurgeConfig::default().queue().inflight());
        let _ = producer.flush(Duration::from_millis(500));
    }
    let left = producer.in_flight_count().max(0) as u64;
    let reports = producer.context();
    crate::notice!(
        log,
        "kafka: producer stopped: {} queued at exit, {}; {} delivered, {} not delivered{} in all",
        queued,
        if flushed {
            "all flushed"
        } else {
            "flush timed out, the rest logged"
        },
        reports.delivered(left),
        reports.failed.load(std::sync::atomic::Ordering::Relaxed),
        if left > 0 {
            format!(", {left} unaccounted for")
        } else {
            String::new()
        },
    );
    reports.flush_repeats();
}
