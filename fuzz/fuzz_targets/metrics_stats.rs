//! librdkafka statistics: no input makes the parser panic; what it accepts is bounded
//! (brokers, name and state lengths) and renders in both forms, the JSON reading back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nginx_kafka_fuzz::metrics::stats::{parse, MAX_BROKERS, MAX_NAME};
use nginx_kafka_fuzz::metrics::{render, Snapshot, WorkerGauges};

fuzz_target!(|data: &[u8]| {
    let Ok(stats) = parse(data) else {
        return;
    };
    assert!(stats.brokers.len() <= MAX_BROKERS);
    for b in &stats.brokers {
        assert!(b.name.len() <= MAX_NAME);
        assert!(b.state.len() <= 32);
    }
    let snapshot = Snapshot {
        workers: vec![WorkerGauges {
            queue_messages: stats.msg_cnt,
            queue_bytes: stats.msg_size,
            brokers: stats.brokers,
            ..WorkerGauges::default()
        }],
        ..Snapshot::default()
    };
    let mut text = Vec::new();
    render::prometheus(&snapshot, &mut text);
    assert!(std::str::from_utf8(&text).is_ok());
    let mut json = Vec::new();
    render::json(&snapshot, &mut json);
    let _: serde_json::Value = serde_json::from_slice(&json).expect("JSON reads back");
});
