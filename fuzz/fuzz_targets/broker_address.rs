//! is_broker_address: what it accepts is one broker with a usable port, and ordinary
//! addresses built from the input are accepted.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nginx_kafka_fuzz::properties::is_broker_address;

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    if is_broker_address(&s) {
        assert!(!s.contains([',', ' ', '\t']), "one broker: {s:?}");
        let rest = s.split_once("://").map_or(&*s, |(_, r)| r);
        assert!(!rest.is_empty() && !rest.starts_with(':'), "a host: {s:?}");
        if let Some((_, port)) = rest.rsplit_once(':') {
            if !rest.ends_with(']') {
                let p: u16 = port.parse().expect("port");
                assert!(p > 0);
            }
        }
    }

    // host, host:port, proto://host:port and [v6]:port built from the input are accepted.
    let host: String = s
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .collect();
    if host.is_empty() {
        return;
    }
    let port = u16::from_le_bytes([data[0], data.get(1).copied().unwrap_or(0)]).max(1);
    for address in [
        host.clone(),
        format!("{host}:{port}"),
        format!("ssl://{host}:{port}"),
        format!("[::1]:{port}"),
    ] {
        assert!(is_broker_address(&address), "rejected {address:?}");
    }
    assert!(!is_broker_address(&format!("{host}:{port},{host}:{port}")));
    assert!(!is_broker_address(&format!("{host}:0")));
});
