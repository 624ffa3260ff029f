//! What collected events say about the client's address (`kafka_collect_client_ip`).

use std::net::IpAddr;

/// `kafka_collect_client_ip`'s values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientIp {
    /// The address as nginx sees it (after `realip`).
    Full,
    /// IPv4 to its /24, IPv6 to its /48: the network, not the host.
    Truncate,
    /// A keyed hash (SHA-256 of a secret and the address, 16 hex digits): the same address
    /// gives the same value until the secret changes.
    Hash,
    /// No address at all.
    Off,
}

/// The `client_ip` header's value for `addr` (nginx's `$remote_addr` text); `None`: no header.
pub fn client_ip(addr: &[u8], mode: ClientIp, secret: &[u8]) -> Option<Vec<u8>> {
    match mode {
        ClientIp::Full => Some(addr.to_vec()),
        ClientIp::Off => None,
        ClientIp::Truncate => {
            let ip: IpAddr = std::str::from_utf8(addr).ok()?.parse().ok()?;
            Some(truncate(ip).to_string().into_bytes())
        }
        ClientIp::Hash => {
            use sha2::{Digest, Sha256};
            let mut h = Sha256::new();
            h.update(secret);
            h.update(addr);
            let digest = h.finalize();
            Some(
                digest[..8]
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
                    .into_bytes(),
            )
        }
    }
}

fn truncate(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            IpAddr::from([a, b, c, 0])
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::from([s[0], s[1], s[2], 0, 0, 0, 0, 0])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(v: Option<Vec<u8>>) -> Option<String> {
        v.map(|b| String::from_utf8(b).unwrap())
    }

    #[test]
    fn modes() {
        let k = b"secret";
        assert_eq!(
            text(client_ip(b"203.0.113.77", ClientIp::Full, k)).unwrap(),
            "203.0.113.77"
        );
        assert_eq!(
            text(client_ip(b"203.0.113.77", ClientIp::Truncate, k)).unwrap(),
            "203.0.113.0"
        );
        assert_eq!(
            text(client_ip(b"2001:db8:aa:bb::1", ClientIp::Truncate, k)).unwrap(),
            "2001:db8:aa::"
        );
        assert_eq!(client_ip(b"unix:", ClientIp::Truncate, k), None);
        assert_eq!(client_ip(b"203.0.113.77", ClientIp::Off, k), None);
        let h = text(client_ip(b"203.0.113.77", ClientIp::Hash, k)).unwrap();
        assert_eq!(h.len(), 16);
        assert_eq!(
            text(client_ip(b"203.0.113.77", ClientIp::Hash, k)).unwrap(),
            h
        );
        assert_ne!(
            text(client_ip(b"203.0.113.78", ClientIp::Hash, k)).unwrap(),
            h
        );
        assert_ne!(
            text(client_ip(b"203.0.113.77", ClientIp::Hash, b"other")).unwrap(),
            h
        );
    }
}
