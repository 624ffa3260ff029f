//! librdkafka properties (`kafka_option`, `kafka_brokers`): checked by librdkafka itself while
//! nginx parses the configuration, so `nginx -t` rejects a property the producer would refuse.

use rdkafka::error::KafkaError;
use rdkafka::ClientConfig;

/// Properties that the module sets itself from other directives.
const RESERVED: &[(&str, &str)] = &[
    ("bootstrap.servers", "kafka_brokers"),
    ("metadata.broker.list", "kafka_brokers"),
];

/// Asks librdkafka whether `name = value` is a valid property. The reason given never
/// contains the value, which may be a password.
pub fn check(name: &str, value: &str) -> Result<(), String> {
    if let Some((_, directive)) = RESERVED.iter().find(|(n, _)| *n == name) {
        return Err(format!("set by the \"{directive}\" directive"));
    }
    let mut config = ClientConfig::new();
    config.set(name, value);
    match config.create_native_config() {
        Ok(_) => Ok(()),
        Err(KafkaError::ClientConfig(_, reason, _, _)) => Err(redact(&reason, value)),
        Err(other) => Err(redact(&other.to_string(), value)),
    }
}

/// `reason` without `value` in it: librdkafka's `Invalid value "X" for ...` loses the `"X" `.
pub fn redact(reason: &str, value: &str) -> String {
    if value.is_empty() {
        return reason.to_string();
    }
    reason
        .replace(&format!("\"{value}\" "), "")
        .replace(value, "(hidden)")
}

/// The producer's configuration: the brokers, the module's own defaults, then the
/// operator's `kafka_option` pairs, which win. `count_deliveries`: the metrics count each
/// delivered message where it came from, so successes are reported too. `statistics`: the
/// metrics and readiness read librdkafka's statistics.
pub fn producer_config(
    brokers: &str,
    options: &[(String, String)],
    count_deliveries: bool,
    statistics: bool,
) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    config.set("client.id", "nginx-kafka");
    // Without metrics, failures only: a failed message is logged with its payload;
    // successes are counted as accepted less failed (delivery.rs).
    config.set(
        "delivery.report.only.error",
        if count_deliveries { "false" } else { "true" },
    );
    if statistics {
        // Broker states and queue sizes for the metrics and readiness, every second.
        config.set("statistics.interval.ms", "1000");
    }
    // Clients name topics: never let them create one, unless the operator opts in.
    config.set("allow.auto.create.topics", "false");
    // What a fast stop (TERM) must log inside the master's kill window: 1 GiB (librdkafka's
    // default) cannot be written in time; 128 MiB can, with room to spare.
    config.set("queue.buffering.max.kbytes", "131072");
    // What Java clients use: one key lands on the same partition whoever produced it.
    config.set("partitioner", "murmur2_random");
    for (name, value) in options {
        config.set(name, value);
    }
    if options.iter().any(|(n, _)| n == "debug") {
        config.set_log_level(rdkafka::config::RDKafkaLogLevel::Debug);
    }
    config
}

/// Checks what librdkafka checks only when a producer is created: properties that do not
/// work together (`enable.idempotence true` with `acks 1`, say). Creating a producer starts
/// threads, which must not exist in nginx's master (they would not survive its `fork`), so
/// a short-lived child process creates it and reports librdkafka's verdict through a pipe.
/// Values are redacted from the reason.
pub fn check_producer(config: &ClientConfig, values: &[&str]) -> Result<(), String> {
    let native = config
        .create_native_config()
        .map_err(|e| redact_all(&e.to_string(), values))?;
    // Forking a process that runs threads (a single process reloading, with its producer)
    // could leave the child waiting on a lock another thread held: skip the check there.
    if std::fs::read_dir("/proc/self/task").map_or(1, |d| d.count()) > 1 {
        return Ok(());
    }
    let mut fds = [0; 2];
    // SAFETY: plain syscalls. SIGCHLD is blocked until our child is reaped, so that nginx's
    // handler (which reaps any child) does not take it first.
    unsafe {
        if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            return Ok(());
        }
        let mut block: libc::sigset_t = core::mem::zeroed();
        let mut old: libc::sigset_t = core::mem::zeroed();
        libc::sigemptyset(&mut block);
        libc::sigaddset(&mut block, libc::SIGCHLD);
        libc::sigprocmask(libc::SIG_BLOCK, &block, &mut old);
        let pid = libc::fork();
        if pid == 0 {
            libc::close(fds[0]);
            rdkafka::bindings::rd_kafka_conf_set_log_cb(native.ptr(), None);
            let mut err = [0 as core::ffi::c_char; 512];
            let rk = rdkafka::bindings::rd_kafka_new(
                rdkafka::bindings::rd_kafka_type_t::RD_KAFKA_PRODUCER,
                native.ptr(),
                err.as_mut_ptr(),
                err.len(),
            );
            if rk.is_null() {
                let reason = core::ffi::CStr::from_ptr(err.as_ptr()).to_bytes();
                libc::write(fds[1], reason.as_ptr().cast(), reason.len());
            }
            libc::_exit(0);
        }
        libc::close(fds[1]);
        let mut reason = Vec::new();
        let mut buf = [0u8; 512];
        loop {
            let n = libc::read(fds[0], buf.as_mut_ptr().cast(), buf.len());
            if n <= 0 {
                break;
            }
            reason.extend_from_slice(&buf[..n as usize]);
        }
        libc::close(fds[0]);
        if pid > 0 {
            libc::waitpid(pid, core::ptr::null_mut(), 0);
        }
        libc::sigprocmask(libc::SIG_SETMASK, &old, core::ptr::null_mut());
        if reason.is_empty() {
            return Ok(());
        }
        Err(redact_all(&String::from_utf8_lossy(&reason), values))
    }
}

fn redact_all(reason: &str, values: &[&str]) -> String {
    values
        .iter()
        .filter(|v| v.len() > 1)
        .fold(reason.to_string(), |r, v| redact(&r, v))
}

/// A broker as librdkafka takes it: `host`, `host:port`, `[v6]:port` or `proto://...`, one
/// address, not a list.
pub fn is_broker_address(s: &str) -> bool {
    if s.is_empty() || s.contains(',') || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return false;
    }
    let rest = match s.split_once("://") {
        Some((proto, rest)) if !proto.is_empty() => rest,
        Some(_) => return false,
        None => s,
    };
    let port_ok = |p: &str| {
        !p.is_empty()
            && p.bytes().all(|b| b.is_ascii_digit())
            && p.parse::<u16>().is_ok_and(|p| p > 0)
    };
    if let Some(v6) = rest.strip_prefix('[') {
        return match v6.split_once(']') {
            Some((host, "")) => !host.is_empty(),
            Some((host, port)) => !host.is_empty() && port.strip_prefix(':').is_some_and(port_ok),
            None => false,
        };
    }
    match rest.split_once(':') {
        None => !rest.is_empty(),
        Some((host, port)) => !host.is_empty() && !host.contains(']') && port_ok(port),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn librdkafka_judges_properties() {
        assert_eq!(check("linger.ms", "5"), Ok(()));
        assert_eq!(check("compression.type", "zstd"), Ok(()));
        let unknown = check("no.such.property", "1").unwrap_err();
        assert!(
            unknown.contains("No such configuration property"),
            "{unknown}"
        );
        let bad = check("linger.ms", "soon").unwrap_err();
        assert!(bad.contains("Invalid value"), "{bad}");
        assert!(!bad.contains("soon"), "{bad}");
        assert!(check("bootstrap.servers", "x:1")
            .unwrap_err()
            .contains("kafka_brokers"));
    }

    #[test]
    fn values_are_never_echoed() {
        let bad = check("linger.ms", "soon").unwrap_err();
        assert!(!bad.contains("soon"), "{bad}");
        assert!(
            bad.contains("Invalid value for configuration property"),
            "{bad}"
        );
        let bad = check("ssl.endpoint.identification.algorithm", "hunter2").unwrap_err();
        assert!(!bad.contains("hunter2"), "{bad}");
        assert_eq!(redact("a x b", "x"), "a (hidden) b");
    }

    #[test]
    fn broker_addresses() {
        assert!(is_broker_address("127.0.0.1:9092"));
        assert!(is_broker_address("kafka-1"));
        assert!(is_broker_address("SSL://b-1.example:9094"));
        assert!(is_broker_address("[::1]:9092"));
        assert!(!is_broker_address("a:9092,b:9092"));
        assert!(!is_broker_address("host:port"));
        assert!(!is_broker_address(":9092"));
        assert!(!is_broker_address("host:0"));
        // Found by fuzzing the old check.
        for bad in [
            "host:+9092",
            "a:b]",
            "x:1:2",
            "://x",
            "a\nb:1",
            "[::1",
            "[::1]x",
        ] {
            assert!(!is_broker_address(bad), "{bad:?}");
        }
        assert!(is_broker_address("[::1]"));
    }
}
