//! librdkafka properties (`kafka_option`, `kafka_brokers`): checked by librdkafka itself while
//! nginx parses the configuration, so `nginx -t` rejects a property the producer would refuse.

use rdkafka::error::KafkaError;
use rdkafka::ClientConfig;

/// Properties that the module sets itself from other directives.
const RESERVED: &[(&str, &str)] = &[
    ("bootstrap.servers", "kafka_brokers"),
    ("metadata.broker.list", "kafka_brokers"),
];

/// Asks librdkafka whether `name = value` is a valid property.
pub fn check(name: &str, value: &str) -> Result<(), String> {
    if let Some((_, directive)) = RESERVED.iter().find(|(n, _)| *n == name) {
        return Err(format!("set by the \"{directive}\" directive"));
    }
    let mut config = ClientConfig::new();
    config.set(name, value);
    match config.create_native_config() {
        Ok(_) => Ok(()),
        Err(KafkaError::ClientConfig(_, reason, _, _)) => Err(reason),
        Err(other) => Err(other.to_string()),
    }
}

/// A broker as librdkafka takes it: `host`, `host:port` or `proto://host:port`, no list.
pub fn is_broker_address(s: &str) -> bool {
    let rest = s.split_once("://").map_or(s, |(_, r)| r);
    !rest.is_empty()
        && !rest.starts_with(':')
        && !s.contains([',', ' ', '\t'])
        && rest
            .rsplit_once(':')
            .is_none_or(|(_, port)| port.parse::<u16>().is_ok_and(|p| p > 0) || rest.ends_with(']'))
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
        assert!(check("bootstrap.servers", "x:1")
            .unwrap_err()
            .contains("kafka_brokers"));
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
    }
}
