//! Reads a topic back and prints each message value on a line of its own.
//!
//! Usage: kafka-consume --brokers HOST:PORT --topic NAME [--group ID] [--count N]
//!                      [--timeout-ms MS] [--keys]
//! Without --group it reads every partition from the beginning; with one, it joins that
//! consumer group. Stops after N messages, or when no message came for MS milliseconds
//! (default 5000).

use std::io::Write;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

fn main() {
    let mut brokers = String::from("127.0.0.1:9092");
    let mut topic = None;
    let mut group = None;
    let mut count = usize::MAX;
    let mut idle = Duration::from_millis(5000);
    let mut keys = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--keys" {
            keys = true;
            continue;
        }
        let value = args.next().unwrap_or_else(|| usage());
        match arg.as_str() {
            "--brokers" => brokers = value,
            "--topic" => topic = Some(value),
            "--group" => group = Some(value),
            "--count" => count = value.parse().unwrap_or_else(|_| usage()),
            "--timeout-ms" => {
                idle = Duration::from_millis(value.parse().unwrap_or_else(|_| usage()))
            }
            _ => usage(),
        }
    }
    let topic = topic.unwrap_or_else(|| usage());

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", group.as_deref().unwrap_or("kafka-consume"))
        .set("auto.offset.reset", "earliest")
        .set(
            "enable.auto.commit",
            if group.is_some() { "true" } else { "false" },
        )
        .create()
        .unwrap_or_else(|e| die(&e.to_string()));
    if group.is_some() {
        consumer
            .subscribe(&[&topic])
            .unwrap_or_else(|e| die(&e.to_string()));
    } else {
        let metadata = consumer
            .fetch_metadata(Some(&topic), Duration::from_secs(10))
            .unwrap_or_else(|e| die(&e.to_string()));
        let mut partitions = TopicPartitionList::new();
        for t in metadata.topics() {
            for p in t.partitions() {
                partitions
                    .add_partition_offset(&topic, p.id(), Offset::Beginning)
                    .unwrap_or_else(|e| die(&e.to_string()));
            }
        }
        consumer
            .assign(&partitions)
            .unwrap_or_else(|e| die(&e.to_string()));
    }

    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let (mut seen, mut last) = (0, Instant::now());
    while seen < count && last.elapsed() < idle {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                if keys {
                    let key = m.key().map(String::from_utf8_lossy).unwrap_or_default();
                    let _ = write!(out, "{}\t{}\t", m.partition(), key);
                }
                let _ = out.write_all(m.payload().unwrap_or_default());
                let _ = out.write_all(b"\n");
                seen += 1;
                last = Instant::now();
            }
            Some(Err(e)) => eprintln!("kafka-consume: {e}"),
            None => {}
        }
    }
    let _ = out.flush();
    eprintln!("kafka-consume: {seen} messages from \"{topic}\"");
}

fn usage() -> ! {
    die("usage: kafka-consume --brokers HOST:PORT --topic NAME [--group ID] [--count N] [--timeout-ms MS] [--keys]")
}

fn die(message: &str) -> ! {
    eprintln!("kafka-consume: {message}");
    std::process::exit(2)
}
