//! The site registry of `kafka_sites` (docs/sites.md): parsing, every rule checked, and the
//! lookups a request needs (its key's site, whether its page is on one of the site's
//! domains, the site a stats secret opens). Plain std + serde code, shared with the
//! `kafka-sites` tool.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// One registered site.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Site {
    pub id: String,
    pub keys: Vec<String>,
    pub domains: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_field: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats_secret_sha256: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    sites: Vec<Site>,
}

/// Every site of a registry file, checked, with an index by key.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    pub sites: Vec<Site>,
    by_key: HashMap<String, usize>,
}

impl Registry {
    pub fn empty() -> Registry {
        Registry::default()
    }

    /// Parses and checks a registry; the error is one line.
    pub fn parse(text: &str) -> Result<Registry, String> {
        let file: File = serde_json::from_str(text).map_err(|e| {
            let msg = e.to_string();
            // serde_json ends its message with " at line L column C": put the place first.
            match msg.rsplit_once(" at line ") {
                Some((what, at)) => format!("line {}: {what}", at.replace(" column", ", column")),
                None => msg,
            }
        })?;
        Registry::from_sites(file.sites)
    }

    /// Checks `sites` and indexes them.
    pub fn from_sites(sites: Vec<Site>) -> Result<Registry, String> {
        let mut by_key = HashMap::new();
        let mut ids = HashMap::new();
        for (i, site) in sites.iter().enumerate() {
            check_site(site)?;
            if ids.insert(site.id.clone(), i).is_some() {
                return Err(format!("site \"{}\" is listed twice", site.id));
            }
            for key in &site.keys {
                if let Some(other) = by_key.insert(key.clone(), i) {
                    let other: &Site = &sites[other];
                    return Err(format!(
                        "site \"{}\": key \"{key}\" is also site \"{}\"'s",
                        site.id, other.id
                    ));
                }
            }
        }
        Ok(Registry { sites, by_key })
    }

    pub fn load(path: &std::path::Path) -> Result<Registry, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot be read: {e}"))?;
        Registry::parse(&text)
    }

    pub fn by_key(&self, key: &[u8]) -> Option<(usize, &Site)> {
        let key = std::str::from_utf8(key).ok()?;
        let &i = self.by_key.get(key)?;
        Some((i, &self.sites[i]))
    }

    pub fn by_id(&self, id: &str) -> Option<(usize, &Site)> {
        self.sites.iter().enumerate().find(|(_, s)| s.id == id)
    }

    /// The site whose stats secret this is; every site's hash is compared, in constant time.
    pub fn by_secret(&self, secret: &[u8]) -> Option<(usize, &Site)> {
        let hash = secret_hash(secret);
        let mut found = None;
        for (i, site) in self.sites.iter().enumerate() {
            if let Some(h) = &site.stats_secret_sha256 {
                if equal_in_constant_time(h.as_bytes(), hash.as_bytes()) {
                    found = Some((i, site));
                }
            }
        }
        found
    }

    /// The registry as its file: 2-space indented JSON, ending with a newline.
    pub fn to_json(&self) -> String {
        let file = File {
            sites: self.sites.clone(),
        };
        let mut text = serde_json::to_string_pretty(&file).unwrap_or_default();
        text.push('\n');
        text
    }
}

impl Site {
    /// Whether `host` (without scheme and port, any case) is one of the site's domains.
    pub fn allows_host(&self, host: &[u8]) -> bool {
        let host = host.to_ascii_lowercase();
        self.domains.iter().any(|d| match d.strip_prefix("*.") {
            Some(parent) => {
                host.len() > parent.len() + 1
                    && host.ends_with(parent.as_bytes())
                    && host[host.len() - parent.len() - 1] == b'.'
            }
            None => host == d.as_bytes(),
        })
    }
}

fn check_site(site: &Site) -> Result<(), String> {
    let id = &site.id;
    let ok_id = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !ok_id {
        return Err(format!(
            "site id \"{id}\" is not 1 to 64 of a-z, 0-9, \"_\" and \"-\""
        ));
    }
    let fail = |what: String| Err(format!("site \"{id}\": {what}"));
    if site.keys.is_empty() {
        return fail("has no key".into());
    }
    for key in &site.keys {
        if key.len() != 32
            || !key
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return fail(format!(
                "key \"{key}\" is not 32 lowercase hexadecimal digits"
            ));
        }
    }
    if site.domains.is_empty() {
        return fail("has no domain".into());
    }
    for d in &site.domains {
        if let Err(why) = check_domain(d) {
            return fail(format!("domain \"{d}\" {why}"));
        }
    }
    if let Some(t) = &site.topic {
        let legal = !t.is_empty()
            && t.len() <= 249
            && t != "."
            && t != ".."
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !legal {
            return fail(format!("topic \"{t}\" is not 1 to 249 of [A-Za-z0-9._-]"));
        }
    }
    if site.key_field.as_deref() == Some("") {
        return fail("key_field is empty".into());
    }
    if site.rate == Some(0) {
        return fail("rate must be at least 1".into());
    }
    if let Some(h) = &site.stats_secret_sha256 {
        if h.len() != 64
            || !h
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return fail("stats_secret_sha256 is not 64 lowercase hexadecimal digits".into());
        }
    }
    Ok(())
}

fn check_domain(d: &str) -> Result<(), &'static str> {
    let (wildcard, name) = match d.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, d),
    };
    if name.contains('*') {
        return Err("may have \"*\" only as its first label (\"*.example.com\")");
    }
    if name.is_empty() || name.len() > 253 {
        return Err("is not a host name");
    }
    for label in name.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err("is not a lowercase host name (letters, digits, \"-\", dots; no scheme, port or path)");
        }
    }
    if wildcard && !name.contains('.') {
        return Err("is a wildcard over a whole top-level domain");
    }
    Ok(())
}

fn equal_in_constant_time(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// SHA-256 of a secret, as 64 lowercase hex digits.
pub fn secret_hash(secret: &[u8]) -> String {
    Sha256::digest(secret)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The host of an `Origin` header ("https://a.example:8443" → "a.example"), lowercased;
/// `None` for "null", or anything that is not `scheme://host[:port]`.
pub fn origin_host(origin: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(origin).ok()?.trim();
    let (_, rest) = text.split_once("://")?;
    host_of(rest.split(['/', '?', '#']).next()?)
}

/// The host of a `Referer` URL; `None` unless it is an absolute http(s) URL.
pub fn referer_host(referer: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(referer).ok()?.trim();
    let (scheme, rest) = text.split_once("://")?;
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return None;
    }
    host_of(rest.split(['/', '?', '#']).next()?)
}

/// `host[:port]` (with any `user@` dropped) → the lowercased host; `[v6]` stays bracketed.
fn host_of(authority: &str) -> Option<String> {
    let authority = authority.rsplit('@').next()?;
    let host = if authority.starts_with('[') {
        &authority[..=authority.find(']')?]
    } else {
        authority.split(':').next()?
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "0123456789abcdef0123456789abcdef";
    const K2: &str = "fedcba9876543210fedcba9876543210";

    fn one(site: &str) -> Result<Registry, String> {
        Registry::parse(&format!(r#"{{"sites":[{site}]}}"#))
    }

    #[test]
    fn a_valid_registry_and_its_lookups() {
        let r = Registry::parse(&format!(
            r#"{{"sites":[
              {{"id":"shop","keys":["{K1}","{K2}"],"domains":["shop.example","*.shop.example"],
                "topic":"web-shop","rate":5,"stats_secret_sha256":"{}"}},
              {{"id":"blog","keys":["00112233445566778899aabbccddeeff"],"domains":["localhost"],"key_field":"uid"}}
            ]}}"#,
            secret_hash(b"s3cret")
        ))
        .unwrap();
        assert_eq!(r.by_key(K2.as_bytes()).unwrap().1.id, "shop");
        assert!(r.by_key(b"nope").is_none());
        assert_eq!(r.by_id("blog").unwrap().0, 1);
        assert_eq!(r.by_secret(b"s3cret").unwrap().1.id, "shop");
        assert!(r.by_secret(b"other").is_none());
        let shop = &r.sites[0];
        for host in [
            "shop.example",
            "a.shop.example",
            "a.b.shop.example",
            "SHOP.Example",
        ] {
            assert!(shop.allows_host(host.as_bytes()), "{host}");
        }
        for host in [
            "xshop.example",
            "shop.example.evil",
            "example",
            "evil.example",
            "",
        ] {
            assert!(!shop.allows_host(host.as_bytes()), "{host}");
        }
        let again = Registry::parse(&r.to_json()).unwrap();
        assert_eq!(again.sites, r.sites);
        assert!(r.to_json().ends_with("}\n"));
        assert!(Registry::parse(r#"{"sites":[]}"#).unwrap().sites.is_empty());
    }

    #[test]
    fn every_rule_is_checked() {
        let site =
            |extra: &str| format!(r#"{{"id":"s","keys":["{K1}"],"domains":["a.example"]{extra}}}"#);
        let cases = [
            (
                r#"{"id":"S!","keys":[],"domains":[]}"#.to_string(),
                "site id \"S!\"",
            ),
            (
                r#"{"id":"s","keys":[],"domains":["a.example"]}"#.to_string(),
                "has no key",
            ),
            (
                r#"{"id":"s","keys":["ABC"],"domains":["a.example"]}"#.to_string(),
                "is not 32 lowercase",
            ),
            (
                format!(r#"{{"id":"s","keys":["{K1}"],"domains":[]}}"#),
                "has no domain",
            ),
            (
                format!(r#"{{"id":"s","keys":["{K1}"],"domains":["*"]}}"#),
                "domain \"*\"",
            ),
            (
                format!(r#"{{"id":"s","keys":["{K1}"],"domains":["*.com"]}}"#),
                "top-level",
            ),
            (
                format!(r#"{{"id":"s","keys":["{K1}"],"domains":["a.*.com"]}}"#),
                "first label",
            ),
            (
                format!(r#"{{"id":"s","keys":["{K1}"],"domains":["https://a.example"]}}"#),
                "no scheme",
            ),
            (
                format!(r#"{{"id":"s","keys":["{K1}"],"domains":["A.example"]}}"#),
                "lowercase",
            ),
            (site(r#","topic":"a b""#), "topic \"a b\""),
            (site(r#","rate":0"#), "rate must be"),
            (site(r#","key_field":"""#), "key_field is empty"),
            (
                site(r#","stats_secret_sha256":"xyz""#),
                "stats_secret_sha256",
            ),
            (site(r#","domain":"a.example""#), "unknown field `domain`"),
        ];
        for (s, want) in cases {
            let e = one(&s).unwrap_err();
            assert!(e.contains(want), "{s}: {e}");
        }
        let two = format!("{},{}", site(""), site(""));
        assert!(one(&two).unwrap_err().contains("listed twice"));
        let shared = format!(
            r#"{},{{"id":"t","keys":["{K1}"],"domains":["b.example"]}}"#,
            site("")
        );
        assert!(one(&shared).unwrap_err().contains("also site \"s\"'s"));
        let e = Registry::parse("{\"sites\": [\n  {\"id\": 1}]}").unwrap_err();
        assert!(e.starts_with("line 2, column"), "{e}");
    }

    #[test]
    fn hosts_of_origins_and_referers() {
        let o = |s: &str| origin_host(s.as_bytes());
        assert_eq!(
            o("https://a.b.example:8443").as_deref(),
            Some("a.b.example")
        );
        assert_eq!(
            o("http://SHOP.localhost").as_deref(),
            Some("shop.localhost")
        );
        assert_eq!(o("http://[::1]:80").as_deref(), Some("[::1]"));
        assert_eq!(o("null"), None);
        assert_eq!(o(""), None);
        assert_eq!(o("shop.example"), None);
        let r = |s: &str| referer_host(s.as_bytes());
        assert_eq!(
            r("https://a.example:81/p?q#f").as_deref(),
            Some("a.example")
        );
        assert_eq!(r("http://u:p@a.example/").as_deref(), Some("a.example"));
        assert_eq!(r("ftp://a.example/"), None);
        assert_eq!(r("/relative"), None);
    }
}
