//! Counts what a topic holds, for the benchmark: the sum of its partitions' high watermarks
//! (every message the broker ever appended), and, with `--expect FILE`, reads back what the
//! broker still retains and compares each value with FILE byte for byte. A broker may have
//! dropped its oldest messages (retention): the watermarks still count them, and the
//! read-back checks what is left.
//!
//! With `--expect-lines FILE` instead, each value must be one of FILE's lines (the events of
//! a batch body, one per line).
//!
//! Usage: kafka-tally --brokers HOST:PORT --topic NAME [--expect FILE | --expect-lines FILE]
//!        [--timeout-ms MS]
//! Prints one JSON object: {"topic":..,"partitions":..,"appended":..,"retained":..,
//! "read":..,"equal":..,"different":..}. A topic that does not exist counts 0.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

#[derive(Default)]
struct Tally {
    partitions: usize,
    appended: i64,
    retained: i64,
    read: i64,
    equal: i64,
    different: i64,
}

fn main() {
    let mut brokers = String::from("127.0.0.1:9092");
    let mut topic = None;
    let mut expect = None;
    let mut timeout = Duration::from_millis(10_000);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().unwrap_or_else(|| usage());
        match arg.as_str() {
            "--brokers" => brokers = value,
            "--topic" => topic = Some(value),
            "--expect" | "--expect-lines" => {
                let bytes = std::fs::read(&value).unwrap_or_else(|e| die(&format!("{value}: {e}")));
                expect = Some(if arg == "--expect" {
                    HashSet::from([bytes])
                } else {
                    bytes
                        .split(|&b| b == b'\n')
                        .filter(|l| !l.is_empty())
                        .map(<[u8]>::to_vec)
                        .collect()
                });
            }
            "--timeout-ms" => {
                timeout = Duration::from_millis(value.parse().unwrap_or_else(|_| usage()))
            }
            _ => usage(),
        }
    }
    let topic = topic.unwrap_or_else(|| usage());
    let tally =
        count(&brokers, &topic, expect.as_ref(), timeout).unwrap_or_else(|e| die(&e.to_string()));
    println!(
        "{{\"topic\":\"{topic}\",\"partitions\":{},\"appended\":{},\"retained\":{},\"read\":{},\"equal\":{},\"different\":{}}}",
        tally.partitions, tally.appended, tally.retained, tally.read, tally.equal, tally.different
    );
}

fn count(
    brokers: &str,
    topic: &str,
    expect: Option<&HashSet<Vec<u8>>>,
    timeout: Duration,
) -> Result<Tally, KafkaError> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "kafka-tally")
        .set("enable.auto.commit", "false")
        .set("allow.auto.create.topics", "false")
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    let mut tally = Tally::default();
    let mut assignment = TopicPartitionList::new();
    for t in metadata.topics().iter().filter(|t| t.error().is_none()) {
        for p in t.partitions() {
            let (low, high) = consumer.fetch_watermarks(topic, p.id(), timeout)?;
            tally.partitions += 1;
            tally.appended += high;
            tally.retained += high - low;
            if high > low {
                assignment.add_partition_offset(topic, p.id(), Offset::Offset(low))?;
            }
        }
    }
    let Some(expect) = expect else {
        return Ok(tally);
    };
    if tally.retained == 0 {
        return Ok(tally);
    }
    consumer.assign(&assignment)?;
    let deadline = Instant::now() + timeout;
    while tally.read < tally.retained && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                tally.read += 1;
                if expect.contains(m.payload().unwrap_or_default()) {
                    tally.equal += 1;
                } else {
                    tally.different += 1;
                }
            }
            Some(Err(e)) => eprintln!("kafka-tally: {e}"),
            None => {}
        }
    }
    Ok(tally)
}

fn usage() -> ! {
    die(
        "usage: kafka-tally --brokers HOST:PORT --topic NAME [--expect FILE | --expect-lines FILE] \
         [--timeout-ms MS]",
    )
}

fn die(message: &str) -> ! {
    eprintln!("kafka-tally: {message}");
    std::process::exit(2)
}
