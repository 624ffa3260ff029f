//! A seeded HTTP fuzzer against the real nginx with the module, on librdkafka's mock cluster.
//!
//! Client threads send mutated HTTP/1.x requests and hand-framed HTTP/2 (h2c, prior
//! knowledge) streams to one nginx with several `kafka_ingest` locations. Every response is
//! checked against a model of what nginx and the module must answer, every event answered
//! 2xx is looked for in Kafka (exactly once, byte for byte), and at the end connections,
//! workers and their memory must be as they were.
//!
//! `HTTP_FUZZ_REQUESTS` (default 200000) and `HTTP_FUZZ_SEED` (default 20261123, so that CI
//! is repeatable; 0 takes one from the clock) set the run; both are printed. A seed replays
//! the same requests (their timing differs).

mod common;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

const DEFAULT_REQUESTS: u64 = 200_000;
/// Client threads: enough to keep two workers busy while some clients sleep or stall.
const THREADS: u64 = 6;
const TOPICS: [&str; 4] = ["fz-a", "fz-b", "fz-c", "fz-fixed"];
/// The mock broker keeps at most 5 MB per partition: spread the load so that the reader,
/// which follows along during the run, never falls that far behind.
const PARTITIONS: i32 = 4;
/// `client_max_body_size` in the configuration.
const MAX_BODY: usize = 64 * 1024;
/// No exchange with nginx takes nearly this long; a read that does is a hang.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// nginx must close a stalled connection by then (header/body timeouts 3 s, lingering 2 s).
const STALL_LIMIT: Duration = Duration::from_secs(20);
/// Statuses a refusal may have (494 is nginx's "request header too large", sent as 400).
const SANE: &[u16] = &[
    400, 403, 404, 405, 408, 411, 413, 414, 431, 494, 501, 503, 505,
];
/// `HTTP_FUZZ_DESCRIBE=1`: keep a description of every event, to show the missing and
/// unexpected ones (for small runs: it costs memory).
static DESCRIBE: AtomicBool = AtomicBool::new(false);
/// RSS a worker may gain between the warm-up and the end of the run.
const RSS_GROWTH_LIMIT_KB: u64 = 20 * 1024;

/// `level`: `HTTP_FUZZ_LOG_LEVEL`, notice by default (info shows why nginx refused requests).
fn nginx_conf(h2_port: u16, level: &str) -> String {
    format!(
        "load_module {{module}};
worker_processes 2;
error_log logs/error.log {level};
pid logs/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path logs/body;
    client_max_body_size 64k;
    # Short, so that stalled clients are cut off within the run.
    client_header_timeout 3s;
    client_body_timeout 3s;
    send_timeout 5s;
    lingering_timeout 2s;
    lingering_time 10s;
    kafka_brokers {{brokers}};
    kafka_option linger.ms 5;
    server {{
        listen 127.0.0.1:{{port}};
        include fuzz-locations.conf;
    }}
    # The same locations with HTTP/2 on: h2c with prior knowledge, and HTTP/1.x still.
    server {{
        listen 127.0.0.1:{h2_port};
        http2 on;
        include fuzz-locations.conf;
    }}
}}
"
    )
}

const LOCATIONS: &str = "
location = /fixed   { kafka_ingest; kafka_topic fz-fixed; }
location = /topic   { kafka_ingest; kafka_topic $http_topic; kafka_allowed_topics fz-*; }
location = /keyed   { kafka_ingest; kafka_topic $http_topic; kafka_allowed_topics fz-*;
                      kafka_key $http_key; }
location = /wrapped { kafka_ingest; kafka_topic $http_topic; kafka_allowed_topics fz-*;
                      kafka_key $http_key; kafka_value_format body_data; }
# Every body over 1k goes through a temporary file.
location = /spill   { kafka_ingest; kafka_topic fz-fixed; kafka_key $http_key;
                      client_body_buffer_size 1k; }
location / { return 404; }
";

// ---------------------------------------------------------------------------------------
// Randomness and digests

/// splitmix64: tiny, fast, and all a fuzzer needs to be reproducible from one seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next()) * n as u128) >> 64) as usize
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    fn percent(&mut self, p: usize) -> bool {
        self.below(100) < p
    }

    fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn weighted<T: Copy>(&mut self, items: &[(usize, T)]) -> T {
        let mut n = self.below(items.iter().map(|i| i.0).sum());
        for &(w, item) in items {
            if n < w {
                return item;
            }
            n -= w;
        }
        unreachable!()
    }

    fn bytes(&mut self, n: usize, out: &mut Vec<u8>) {
        while out.len() + 8 <= n {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        while out.len() < n {
            out.push(self.next() as u8);
        }
    }

    /// `n` bytes a header value may hold: anything but NUL, CR and LF.
    fn header_bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n)
            .map(|_| loop {
                let b = self.next() as u8;
                if !matches!(b, 0 | b'\r' | b'\n') {
                    break b;
                }
            })
            .collect()
    }

    fn printable(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| b'!' + self.below(94) as u8).collect()
    }
}

fn fmix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// A 128-bit digest of a sequence of byte strings: two multiply-rotate lanes over the words
/// and each part's length. Not cryptographic, but a collision between the bodies of a run is
/// out of reach, so the ledger keeps digests, not the gigabytes they stand for.
fn digest(parts: &[&[u8]]) -> u128 {
    let (mut a, mut b) = (0x243f_6a88_85a3_08d3_u64, 0x1319_8a2e_0370_7344_u64);
    for part in parts {
        let mut words = part.chunks_exact(8);
        for w in &mut words {
            let w = u64::from_le_bytes(w.try_into().unwrap());
            a = (a ^ w).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29);
            b = (b ^ w.rotate_left(17))
                .wrapping_mul(0xc2b2_ae3d_27d4_eb4f)
                .rotate_left(31);
        }
        let mut tail = [0u8; 8];
        tail[..words.remainder().len()].copy_from_slice(words.remainder());
        let (w, len) = (u64::from_le_bytes(tail), part.len() as u64);
        a = (a ^ w ^ len.wrapping_mul(0x27d4_eb2f_1656_67c5))
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(29);
        b = (b ^ w.rotate_left(17) ^ len)
            .wrapping_mul(0xc2b2_ae3d_27d4_eb4f)
            .rotate_left(31);
    }
    (u128::from(fmix(a)) << 64) | u128::from(fmix(b ^ a.rotate_left(7)))
}

/// What identifies a message in Kafka: topic, key (or none) and value.
fn event_id(topic: &[u8], key: Option<&[u8]>, value: &[u8]) -> u128 {
    match key {
        Some(k) => digest(&[topic, b"k", k, value]),
        None => digest(&[topic, b"-", value]),
    }
}

/// `kafka_value_format body_data`, as the README specifies it: lua-cjson's encoding of the
/// body as a JSON string (`"`, `\`, `/` and control bytes escaped, other bytes as they are).
fn body_data(body: &[u8]) -> Vec<u8> {
    let mut out = b"{\"body_data\":\"".to_vec();
    for &b in body {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'/' => out.extend_from_slice(b"\\/"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            0..=0x1f | 0x7f => out.extend_from_slice(format!("\\u{b:04x}").as_bytes()),
            _ => out.push(b),
        }
    }
    out.extend_from_slice(b"\"}");
    out
}

fn is_legal_topic(t: &[u8]) -> bool {
    !t.is_empty()
        && t.len() <= 249
        && t != b"."
        && t != b".."
        && t.iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Bytes for a report: printable ASCII as it is, the rest escaped, cut at `max`.
fn show(bytes: &[u8], max: usize) -> String {
    let mut s = String::new();
    for &b in bytes.iter().take(max) {
        match b {
            b'\r' => s.push_str("\\r"),
            b'\n' => s.push_str("\\n"),
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(b as char),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    if bytes.len() > max {
        s.push_str(&format!("...({} bytes)", bytes.len()));
    }
    s
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------------------------------
// The model: what a request means to nginx and the module, and what it must get

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Loc {
    Fixed,
    Topic,
    Keyed,
    Wrapped,
    Spill,
    Nowhere,
}

impl Loc {
    fn path(self) -> &'static str {
        match self {
            Loc::Fixed => "/fixed",
            Loc::Topic => "/topic",
            Loc::Keyed => "/keyed",
            Loc::Wrapped => "/wrapped",
            Loc::Spill => "/spill",
            Loc::Nowhere => "/nope",
        }
    }

    fn fixed_topic(self) -> Option<&'static [u8]> {
        matches!(self, Loc::Fixed | Loc::Spill).then_some(b"fz-fixed")
    }

    fn keyed(self) -> bool {
        matches!(self, Loc::Keyed | Loc::Wrapped | Loc::Spill)
    }
}

/// What a response must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Want {
    /// The event must be queued: 204 (or 503 if the producer is busy).
    Accepted,
    /// Exactly this status and, when the module answers, this error code.
    Status(u16, Option<&'static str>),
    /// Some refusal (a status in `SANE`); nothing is queued.
    Refused,
}

/// What one request must get, and the event it stands for.
#[derive(Clone, Debug)]
struct Expect {
    want: Want,
    /// The message a 2xx must have put in Kafka.
    event: Option<u128>,
    /// A HEAD request: the response has no body.
    head: bool,
    /// The request reaches a `kafka_ingest` location: the module's refusals are JSON.
    module: bool,
    /// The connection may end before this request is answered (nginx may close on it
    /// with unread bytes, which resets the connection).
    may_drop: bool,
}

/// The parts of a request the module looks at, as nginx will have parsed them.
struct Meaning<'a> {
    loc: Loc,
    /// POST or PUT.
    ingest: bool,
    head: bool,
    /// `$http_topic`, `$http_key`: the header values joined with ", ", or none.
    topic: Option<Vec<u8>>,
    key: Option<Vec<u8>>,
    /// The body nginx reads.
    body: &'a [u8],
    /// The declared Content-Length.
    declared: Option<usize>,
}

/// The README's contract, in the order nginx and the module apply it.
fn predict(m: &Meaning) -> Expect {
    let mut e = Expect {
        want: Want::Accepted,
        event: None,
        head: m.head,
        module: m.loc != Loc::Nowhere,
        may_drop: false,
    };
    let refuse = |e: Expect, status, code| Expect {
        want: Want::Status(status, code),
        ..e
    };
    // nginx refuses a declared body over client_max_body_size before any handler runs.
    if m.declared.is_some_and(|n| n > MAX_BODY) {
        return refuse(e, 413, None);
    }
    if m.loc == Loc::Nowhere {
        return refuse(e, 404, None);
    }
    if !m.ingest {
        return refuse(e, 405, Some("method_not_allowed"));
    }
    let topic = match m.loc.fixed_topic() {
        Some(t) => t.to_vec(),
        None => m.topic.clone().unwrap_or_default(),
    };
    if topic.is_empty() {
        return refuse(e, 400, Some("no_topic"));
    }
    if !is_legal_topic(&topic) {
        return refuse(e, 400, Some("invalid_topic"));
    }
    if !topic.starts_with(b"fz-") {
        return refuse(e, 403, Some("topic_not_allowed"));
    }
    assert!(
        TOPICS.iter().any(|t| t.as_bytes() == topic),
        "the generator names only existing topics: {}",
        show(&topic, 300)
    );
    if m.body.is_empty() {
        return refuse(e, 400, Some("empty_body"));
    }
    if m.body.len() > MAX_BODY {
        // Over the limit without a declared length: seen while reading, by nginx or the module.
        return refuse(e, 413, None);
    }
    let key = match m.loc.keyed() {
        true => m.key.as_deref().filter(|k| !k.is_empty()),
        false => None,
    };
    let id = match m.loc {
        Loc::Wrapped => event_id(&topic, key, &body_data(m.body)),
        _ => event_id(&topic, key, m.body),
    };
    e.event = Some(id);
    e
}

/// The error codes the module may give with a status (README, "Responses").
fn module_codes(status: u16) -> &'static [&'static str] {
    match status {
        400 => &["empty_body", "no_topic", "invalid_topic", "bad_body"],
        403 => &["topic_not_allowed"],
        404 => &["unknown_topic"],
        405 => &["method_not_allowed"],
        413 => &["too_large"],
        503 => &["busy", "unavailable"],
        _ => &[],
    }
}

/// The `error` of a module body `{"error":"<code>","message":"<text>"}`, or why it is not one.
fn module_error(body: &[u8]) -> Result<&str, String> {
    let text = std::str::from_utf8(body).map_err(|_| "not UTF-8".to_string())?;
    let rest = text
        .strip_prefix("{\"error\":\"")
        .ok_or_else(|| format!("not a module body: {}", show(body, 120)))?;
    let (code, rest) = rest
        .split_once('"')
        .ok_or_else(|| format!("unterminated: {}", show(body, 120)))?;
    let message = rest
        .strip_prefix(",\"message\":\"")
        .and_then(|m| m.strip_suffix("\"}"))
        .ok_or_else(|| format!("no message: {}", show(body, 120)))?;
    if message.is_empty() || message.contains('"') {
        return Err(format!("bad message: {}", show(body, 120)));
    }
    Ok(code)
}

// ---------------------------------------------------------------------------------------
// Generators shared by HTTP/1 and HTTP/2

fn gen_loc(rng: &mut Rng) -> Loc {
    rng.weighted(&[
        (20, Loc::Fixed),
        (24, Loc::Topic),
        (16, Loc::Keyed),
        (16, Loc::Wrapped),
        (20, Loc::Spill),
        (4, Loc::Nowhere),
    ])
}

/// A spelling of the location's path, and the location nginx will map it to (it decodes
/// `%XX`, merges slashes and resolves dot segments before matching).
fn gen_path(rng: &mut Rng, loc: Loc, absolute: bool) -> (String, Loc) {
    let base = loc.path();
    match rng.below(30) {
        0 => (format!("{base}?uid=7&x=%00%ff"), loc),
        1 => {
            let i = rng.range(1, base.len() - 1);
            let b = base.as_bytes()[i];
            let hex = match rng.one_in(2) {
                true => format!("%{b:02X}"),
                false => format!("%{b:02x}"),
            };
            (format!("{}{hex}{}", &base[..i], &base[i + 1..]), loc)
        }
        2 => (format!("/{base}"), loc),
        3 => (format!("/.{base}"), loc),
        4 => (format!("/zz/..{base}"), loc),
        5 if absolute => (format!("http://localhost{base}"), loc),
        6 => (format!("{base}/"), Loc::Nowhere),
        7 => (base.to_uppercase(), Loc::Nowhere),
        _ => (base.to_string(), loc),
    }
}

fn gen_body(rng: &mut Rng) -> Vec<u8> {
    let len = match rng.below(100) {
        0..=4 => 0,
        5..=54 => rng.range(1, 200),
        55..=79 => rng.range(201, 1024),
        80..=92 => rng.range(1025, 16 * 1024),
        93..=97 => rng.range(16 * 1024 + 1, MAX_BODY),
        // Either side of client_max_body_size.
        _ => rng.range(MAX_BODY - 8, MAX_BODY + 4096),
    };
    let mut body = Vec::with_capacity(len);
    match rng.below(6) {
        0 => rng.bytes(len, &mut body),
        1 => body = rng.printable(len),
        2 => {
            // JSON-ish, with everything lua-cjson escapes.
            let mut n = 0u64;
            while body.len() < len {
                n += 1;
                let word = rng.pick(&["\"q\"", "\\", "/", "\n", "\t", "\x01", "\x7f", "é", "x"]);
                body.extend_from_slice(format!("{{\"n\":{n},\"s\":\"{word}\"}},").as_bytes());
            }
            body.truncate(len);
        }
        3 => {
            // Multi-byte UTF-8, possibly cut inside a character.
            while body.len() < len {
                body.extend_from_slice(rng.pick(&["事件", "é", "\u{1F600}", "ß", "a"]).as_bytes());
            }
            body.truncate(len);
        }
        4 => body.resize(len, *rng.pick(&[0u8, b'\r', b'\n', b'0', b'x', 0xff])),
        _ => {
            // Bytes that look like HTTP framing: they must stay body bytes.
            while body.len() < len {
                body.extend_from_slice(
                    rng.pick(&[
                        "0\r\n\r\n",
                        "POST /fixed HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nz",
                        "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
                        "\r\n",
                        "5;ext\r\nhello\r\n",
                    ])
                    .as_bytes(),
                );
            }
            body.truncate(len);
        }
    }
    body
}

/// Header values as sent, and what `$http_<name>` evaluates to: HTTP/1 trims spaces around
/// each value, HTTP/2 keeps them; repeated headers are joined with ", ".
fn evaluate(values: &[Vec<u8>], trim: bool) -> Option<Vec<u8>> {
    if values.is_empty() {
        return None;
    }
    let parts: Vec<&[u8]> = values
        .iter()
        .map(|v| match trim {
            true => trim_spaces(v),
            false => v.as_slice(),
        })
        .collect();
    Some(parts.join(&b", "[..]))
}

/// nginx's HTTP/1 header parser trims spaces around a value, and only spaces (not tabs).
fn trim_spaces(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|&b| b != b' ').unwrap_or(v.len());
    let end = v.iter().rposition(|&b| b != b' ').map_or(start, |i| i + 1);
    &v[start..end]
}

/// Values for the `topic` header (none: the header is absent).
fn gen_topic(rng: &mut Rng) -> Vec<Vec<u8>> {
    let valid = |rng: &mut Rng| rng.pick(&TOPICS).as_bytes().to_vec();
    match rng.below(100) {
        0..=3 => vec![],
        4..=6 => vec![b"".to_vec()],
        7..=9 => vec![rng
            .pick(&["other", "FZ-A", "fz", "fza", "my-poc-topic-01"])
            .as_bytes()
            .to_vec()],
        10..=13 => vec![rng
            .pick(&[
                &b"fz-a b"[..],
                b"fz-a\t",
                b"fz-\xff",
                "fz-é".as_bytes(),
                b"fz/a",
                b"..",
                b"fz-a,fz-b",
            ])
            .to_vec()],
        14 => vec![[b"fz-".to_vec(), vec![b'a'; 247]].concat()],
        15..=16 => vec![valid(rng), valid(rng)],
        17..=18 => {
            let n = rng.range(1, 12);
            vec![rng.header_bytes(n)]
        }
        19..=29 => {
            let mut v = vec![b' '; rng.below(3)];
            v.extend(valid(rng));
            v.extend(vec![b' '; rng.below(3)]);
            vec![v]
        }
        _ => vec![valid(rng)],
    }
}

/// Values for the `key` header: any bytes a header may carry.
fn gen_key(rng: &mut Rng) -> Vec<Vec<u8>> {
    match rng.below(100) {
        0..=24 => vec![],
        25..=29 => vec![vec![b' '; rng.range(0, 3)]],
        30..=39 => {
            let n = rng.range(1, 64);
            vec![rng.header_bytes(n)]
        }
        40..=44 => (0..rng.range(2, 3))
            .map(|_| {
                let n = rng.range(0, 12);
                rng.printable(n)
            })
            .collect(),
        45..=48 => {
            let n = rng.range(1000, 4000);
            vec![rng.printable(n)]
        }
        _ => {
            let n = rng.range(1, 32);
            vec![rng.printable(n)]
        }
    }
}

/// Headers that must not change what the request means.
fn gen_noise(rng: &mut Rng, lowercase: bool) -> Vec<(Vec<u8>, Vec<u8>)> {
    let names = [
        "User-Agent",
        "Accept",
        "X-Fuzz",
        "Cookie",
        "Content-Type",
        "X-Topic",
        "Keys",
        "X_Under_Score",
        "Keep-Alive",
    ];
    (0..rng.below(5))
        .map(|_| {
            let name = rng.pick(&names);
            let name = match lowercase {
                true => name.to_ascii_lowercase(),
                false => name.to_string(),
            };
            let n = rng.range(0, 80);
            let value = match rng.one_in(3) {
                true => rng.header_bytes(n),
                false => rng.printable(n),
            };
            (name.into_bytes(), value)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// HTTP/1.x requests

/// One HTTP/1.x request as bytes, with what it must get.
struct H1Request {
    bytes: Vec<u8>,
    /// Where the header block ends and the body begins.
    head_len: usize,
    expect: Expect,
    /// nginx cannot frame what follows it, or closes on it: nothing may be sent after it.
    terminal: bool,
    /// `Expect: 100-continue` was sent.
    continue_100: bool,
}

/// Faults nginx must refuse; at most one per request, so that the answer is known.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum H1Fault {
    // Refused while nginx reads the request line and header.
    BadMethod,
    BadVersion,
    HugeUri,
    NoHost,
    HugeHeader,
    NulInHeader,
    SpaceBeforeColon,
    ObsFold,
    LengthAndChunked,
    DoubleLength,
    BadLength,
    UnknownCoding,
    ChunkedHttp10,
    Trace,
    // Broken body framing.
    BadChunkSize,
    ChunkOverrun,
    HugeChunk,
    /// Content-Length shorter than what follows: the rest is read as the next request.
    ShortLength,
    /// The body ends early and the client shuts down its side.
    Truncated,
}

const H1_FAULTS: &[(usize, H1Fault)] = &[
    (2, H1Fault::BadMethod),
    (2, H1Fault::BadVersion),
    (1, H1Fault::HugeUri),
    (2, H1Fault::NoHost),
    (1, H1Fault::HugeHeader),
    (1, H1Fault::NulInHeader),
    (1, H1Fault::SpaceBeforeColon),
    (1, H1Fault::ObsFold),
    (3, H1Fault::LengthAndChunked),
    (1, H1Fault::DoubleLength),
    (2, H1Fault::BadLength),
    (2, H1Fault::UnknownCoding),
    (1, H1Fault::ChunkedHttp10),
    (1, H1Fault::Trace),
    (3, H1Fault::BadChunkSize),
    (2, H1Fault::ChunkOverrun),
    (2, H1Fault::HugeChunk),
    (3, H1Fault::ShortLength),
    (3, H1Fault::Truncated),
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length,
    Chunked,
    /// Neither Content-Length nor Transfer-Encoding: no body.
    Bare,
}

fn shuffle<T>(rng: &mut Rng, items: &mut [T]) {
    for i in (1..items.len()).rev() {
        items.swap(i, rng.below(i + 1));
    }
}

/// A request; with `faults`, sometimes one nginx must refuse.
fn gen_h1(rng: &mut Rng, faults: bool) -> H1Request {
    use H1Fault::*;
    let fault = match faults && rng.percent(7) {
        true => Some(rng.weighted(H1_FAULTS)),
        false => None,
    };
    let (mut path, loc) = {
        let loc = gen_loc(rng);
        gen_path(rng, loc, true)
    };
    if fault == Some(HugeUri) {
        path.push('?');
        path.push_str(&"u".repeat(rng.range(9000, 12000)));
    }
    let method = match fault {
        Some(BadMethod) => *rng.pick(&["post", "P0ST", "GE T", "\x01POST", "POST\x7f"]),
        Some(Trace) => "TRACE",
        _ => rng.weighted(&[
            (74, "POST"),
            (12, "PUT"),
            (3, "GET"),
            (2, "HEAD"),
            (2, "OPTIONS"),
            (2, "DELETE"),
            (1, "PATCH"),
            (1, "M-SEARCH"),
            (1, "FUZZ_IT"),
        ]),
    };
    let chunk_fault = matches!(
        fault,
        Some(UnknownCoding | BadChunkSize | ChunkOverrun | HugeChunk | LengthAndChunked)
    );
    let http10 =
        fault == Some(ChunkedHttp10) || (fault != Some(NoHost) && !chunk_fault && rng.percent(6));
    let version = match fault {
        Some(BadVersion) => *rng.pick(&[
            "HTTP/2.0",
            "HTTX/1.1",
            "HTTP/1",
            "HTTP/1.1.1",
            "http/1.1",
            "HTTP/9.9",
        ]),
        _ if http10 => "HTTP/1.0",
        _ => "HTTP/1.1",
    };
    let lf_only = fault.is_none() && rng.percent(4);
    let eol: &[u8] = if lf_only { b"\n" } else { b"\r\n" };

    let mut lines: Vec<Vec<u8>> = Vec::new();
    let line = |rng: &mut Rng, name: &str, value: &[u8]| {
        let sep = *rng.pick(&[": ", ":", ":  "]);
        [name.as_bytes(), sep.as_bytes(), value].concat()
    };
    if fault != Some(NoHost) && !(http10 && rng.one_in(2)) {
        let host = *rng.pick(&["localhost", "127.0.0.1", "x.example"]);
        let name = *rng.pick(&["Host", "host", "HOST"]);
        lines.push(line(rng, name, host.as_bytes()));
    }
    // Repeated topic and key headers are joined in their order: they are placed after the
    // shuffle below, in order, into slots that the shuffle moved.
    let topics = gen_topic(rng);
    let keys = gen_key(rng);
    let (topic_slot, key_slot) = (b"\0topic".to_vec(), b"\0key".to_vec());
    lines.extend(topics.iter().map(|_| topic_slot.clone()));
    lines.extend(keys.iter().map(|_| key_slot.clone()));
    for (name, value) in gen_noise(rng, false) {
        lines.push(line(rng, std::str::from_utf8(&name).unwrap(), &value));
    }

    let mut body = gen_body(rng);
    let needs_body = matches!(
        fault,
        Some(ShortLength | HugeChunk | ChunkOverrun | BadChunkSize | Truncated)
    );
    if needs_body && body.is_empty() {
        let n = rng.range(1, 50);
        body = rng.printable(n);
    }
    let mut framing = match body.is_empty() {
        true => rng.weighted(&[
            (5, Framing::Length),
            (3, Framing::Bare),
            (2, Framing::Chunked),
        ]),
        false => rng.weighted(&[(70, Framing::Length), (30, Framing::Chunked)]),
    };
    match fault {
        Some(ChunkedHttp10 | UnknownCoding | BadChunkSize | ChunkOverrun | HugeChunk) => {
            framing = Framing::Chunked
        }
        Some(ShortLength | DoubleLength | BadLength | LengthAndChunked) => {
            framing = Framing::Length
        }
        _ if http10 && framing == Framing::Chunked => framing = Framing::Length,
        _ => {}
    }
    let mut declared = None;
    let mut sent_body = Vec::new();
    let mut read_body = &body[..];
    match framing {
        Framing::Length => {
            let n = match fault {
                Some(ShortLength) => rng.below(body.len()),
                Some(Truncated) => body.len() + rng.range(1, 100),
                _ => body.len(),
            };
            let value = match fault {
                Some(BadLength) => rng
                    .pick(&["+5", "5x", "-1", "", "99999999999999999999", "0x10", "1 2"])
                    .to_string(),
                _ if rng.one_in(20) => format!("00{n}"),
                _ => n.to_string(),
            };
            let name = *rng.pick(&["Content-Length", "content-length", "CONTENT-LENGTH"]);
            lines.push(line(rng, name, value.as_bytes()));
            if fault == Some(DoubleLength) {
                lines.push(format!("Content-Length: {value}").into_bytes());
            }
            if fault == Some(LengthAndChunked) {
                lines.push(b"Transfer-Encoding: chunked".to_vec());
            }
            declared = Some(n);
            sent_body = match fault {
                Some(ShortLength) => {
                    // What follows the declared length is the next "request": garbage nginx
                    // must refuse, never part of this event.
                    read_body = &body[..n];
                    let garbage = *rng.pick(&[
                        &b"xyz\r\n\r\n"[..],
                        b"q / HTTP/1.1\r\n\r\n",
                        b"get /fixed HTTP/1.1\r\nHost: x\r\n\r\n",
                        b"\x01\x02\x03",
                    ]);
                    [&body[..n], garbage].concat()
                }
                _ => body.clone(),
            };
        }
        Framing::Chunked => {
            let coding = match fault {
                Some(UnknownCoding) => *rng.pick(&[
                    "gzip",
                    "chunked, gzip",
                    "gzip, chunked",
                    "identity",
                    "chunked;q=1",
                ]),
                _ => *rng.pick(&["chunked", "chunked", "Chunked", "CHUNKED"]),
            };
            lines.push(line(rng, "Transfer-Encoding", coding.as_bytes()));
            sent_body = chunked(rng, &body, eol, fault);
        }
        Framing::Bare => {}
    }
    let continue_100 = fault.is_none() && !http10 && rng.percent(15);
    if continue_100 {
        let v = *rng.pick(&["100-continue", "100-Continue"]);
        lines.push(line(rng, "Expect", v.as_bytes()));
    }
    if http10 {
        if rng.percent(60) {
            lines.push(b"Connection: keep-alive".to_vec());
        }
    } else if rng.percent(3) {
        lines.push(b"Connection: close".to_vec());
    } else if rng.percent(3) {
        lines.push(b"Connection: keep-alive".to_vec());
    }
    match fault {
        Some(HugeHeader) => {
            let n = rng.range(9000, 12000);
            let name = *rng.pick(&["X-Big", "key", "topic"]);
            lines.push([name.as_bytes(), b": ", &rng.printable(n)].concat());
        }
        Some(NulInHeader) => lines.push(b"X-Fuzz: a\0b".to_vec()),
        Some(SpaceBeforeColon) => lines.push(b"X-Fuzz : v".to_vec()),
        _ => {}
    }
    shuffle(rng, &mut lines);
    let (mut next_topic, mut next_key) = (topics.iter(), keys.iter());
    for l in lines.iter_mut() {
        if *l == topic_slot {
            let name = *rng.pick(&["topic", "Topic", "TOPIC"]);
            *l = line(rng, name, next_topic.next().unwrap());
        } else if *l == key_slot {
            let name = *rng.pick(&["key", "Key", "KEY"]);
            *l = line(rng, name, next_key.next().unwrap());
        }
    }
    if fault == Some(ObsFold) {
        let at = rng.below(lines.len() + 1);
        lines.insert(at, b" folded".to_vec());
    }

    let mut head = format!("{method} {path} {version}").into_bytes();
    head.extend_from_slice(eol);
    for l in &lines {
        head.extend_from_slice(l);
        head.extend_from_slice(eol);
    }
    head.extend_from_slice(eol);

    let mut expect = predict(&Meaning {
        loc,
        ingest: matches!(method, "POST" | "PUT"),
        head: method == "HEAD",
        topic: evaluate(&topics, true),
        key: evaluate(&keys, true),
        body: read_body,
        declared,
    });
    let predicted = expect.clone();
    let header_fault = |want| Expect {
        want,
        event: None,
        module: false,
        may_drop: true,
        ..predicted.clone()
    };
    match fault {
        None | Some(ShortLength) => {}
        Some(BadMethod | BadVersion | HugeHeader) => expect = header_fault(Want::Refused),
        Some(HugeUri) => expect = header_fault(Want::Status(414, None)),
        Some(UnknownCoding) => expect = header_fault(Want::Status(501, None)),
        Some(Trace) => expect = header_fault(Want::Status(405, None)),
        Some(
            NoHost | NulInHeader | SpaceBeforeColon | ObsFold | LengthAndChunked | DoubleLength
            | BadLength | ChunkedHttp10,
        ) => expect = header_fault(Want::Status(400, None)),
        Some(BadChunkSize | ChunkOverrun | Truncated | HugeChunk) => {
            // A refusal before the body is read still stands; otherwise the body is refused.
            expect.want = match (fault, expect.want) {
                (Some(HugeChunk), Want::Accepted) => Want::Status(413, None),
                _ => Want::Refused,
            };
            expect.event = None;
            expect.may_drop = true;
        }
    }
    let head_len = head.len();
    head.extend_from_slice(&sent_body);
    H1Request {
        bytes: head,
        head_len,
        expect,
        terminal: fault.is_some(),
        continue_100,
    }
}

/// `body` in chunks of random sizes, with extensions and trailers now and then; `fault`
/// breaks one chunk.
fn chunked(rng: &mut Rng, body: &[u8], eol: &[u8], fault: Option<H1Fault>) -> Vec<u8> {
    let mut pieces = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let n = match rng.below(4) {
            0 => rest.len(),
            1 => rng.range(1, rest.len().min(16)),
            _ => rng.range(1, rest.len()),
        };
        pieces.push(&rest[..n]);
        rest = &rest[n..];
    }
    let broken = rng.below(pieces.len().max(1));
    let mut out = Vec::new();
    let extension = |rng: &mut Rng, out: &mut Vec<u8>| {
        if rng.one_in(10) {
            let exts: [&[u8]; 5] = [b";ext", b";a=b", b"; name=\"v;x\"", b" ", b"\t;x=\x01\xff"];
            let ext = *rng.pick(&exts);
            out.extend_from_slice(ext);
        }
    };
    for (i, piece) in pieces.iter().enumerate() {
        let n = piece.len();
        let mut size = match rng.below(10) {
            0 => format!("{n:X}"),
            1 => format!("00{n:x}"),
            _ => format!("{n:x}"),
        };
        let mut data = piece.to_vec();
        if i == broken {
            match fault {
                Some(H1Fault::BadChunkSize) => {
                    size = rng
                        .pick(&["zz", "-1", "0x10", "ffffffffffffffffff", ""])
                        .to_string()
                }
                Some(H1Fault::ChunkOverrun) => data.extend_from_slice(b"EXTRA"),
                Some(H1Fault::HugeChunk) => {
                    let huge = *rng.pick(&["100000", "10000000", "fffffffffff"]);
                    out.extend_from_slice(huge.as_bytes());
                    out.extend_from_slice(eol);
                    out.extend_from_slice(&data[..n.min(100)]);
                    return out;
                }
                _ => {}
            }
        }
        out.extend_from_slice(size.as_bytes());
        extension(rng, &mut out);
        out.extend_from_slice(eol);
        out.extend_from_slice(&data);
        out.extend_from_slice(eol);
    }
    if fault == Some(H1Fault::Truncated) {
        let cut = rng.below(out.len().max(1));
        out.truncate(cut);
        return out;
    }
    out.push(b'0');
    extension(rng, &mut out);
    out.extend_from_slice(eol);
    if rng.one_in(8) {
        for _ in 0..rng.range(1, 2) {
            out.extend_from_slice(b"X-Trailer: t\x01\xff");
            out.extend_from_slice(eol);
        }
    }
    out.extend_from_slice(eol);
    out
}

/// A response, as much of it as the checks need.
#[derive(Debug, Default)]
struct Resp {
    status: u16,
    /// `Connection: close`: nginx reads nothing more on this connection.
    close: bool,
    /// `Content-Type: application/json` (HTTP/1), or a body shaped like the module's (HTTP/2).
    json: bool,
    allow: Option<String>,
    retry_after: Option<String>,
    body: Vec<u8>,
    /// How long the client waited for it.
    waited: Duration,
}

enum Got {
    Resp(Resp),
    Closed,
    Reset,
    TimedOut,
    Garbled(String),
}

fn io_end(e: &std::io::Error) -> Got {
    match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => Got::TimedOut,
        _ => Got::Reset,
    }
}

/// Closes with RST instead of FIN.
fn set_linger_zero(stream: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket and a `linger` of the size passed.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

fn connect(port: u16) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// An HTTP/1 connection: writes as told, parses responses one by one.
struct H1Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    pos: usize,
}

impl H1Conn {
    fn send(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).is_ok()
    }

    /// Writes `bytes` in a few pieces, so that nginx sees requests split across reads.
    fn send_split(&mut self, rng: &mut Rng, bytes: &[u8]) -> bool {
        let mut cuts: Vec<usize> = (0..rng.below(4)).map(|_| rng.below(bytes.len())).collect();
        cuts.push(bytes.len());
        cuts.sort_unstable();
        let mut at = 0;
        for cut in cuts {
            if !self.send(&bytes[at..cut]) {
                return false;
            }
            at = cut;
        }
        true
    }

    /// A slow client: the first bytes a few at a time, with short pauses (bounded: at most
    /// 16 pieces of 0.5 ms).
    fn dribble(&mut self, rng: &mut Rng, bytes: &[u8]) -> bool {
        let mut at = 0;
        for _ in 0..rng.range(2, 16) {
            let n = rng.range(1, 24).min(bytes.len() - at);
            if n == 0 || !self.send(&bytes[at..at + n]) {
                break;
            }
            at += n;
            std::thread::sleep(Duration::from_micros(rng.range(50, 500) as u64));
        }
        self.send(&bytes[at..])
    }

    fn fill(&mut self) -> Result<(), Got> {
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        let mut chunk = [0u8; 16384];
        match self.stream.read(&mut chunk) {
            Ok(0) => Err(Got::Closed),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Err(e) => Err(io_end(&e)),
        }
    }

    /// The next response; 1xx are skipped unless `interim`.
    fn response(&mut self, head: bool, interim: bool) -> Got {
        let started = Instant::now();
        let mut got = self.next_response(head, interim);
        if let Got::Resp(r) = &mut got {
            r.waited = started.elapsed();
        }
        got
    }

    fn next_response(&mut self, head: bool, interim: bool) -> Got {
        loop {
            let end = loop {
                if let Some(i) = find(&self.buf[self.pos..], b"\r\n\r\n") {
                    break self.pos + i;
                }
                if self.buf.len() - self.pos > 65536 {
                    return Got::Garbled("no end of header in 64 KB".into());
                }
                if let Err(got) = self.fill() {
                    return got;
                }
            };
            let head_bytes = self.buf[self.pos..end].to_vec();
            self.pos = end + 4;
            let text = String::from_utf8_lossy(&head_bytes);
            let mut lines = text.split("\r\n");
            let status_line = lines.next().unwrap_or_default();
            let status = match status_line.strip_prefix("HTTP/1.1 ") {
                Some(rest) if rest.len() >= 3 => rest[..3].parse::<u16>().ok(),
                _ => None,
            };
            let Some(status) = status else {
                return Got::Garbled(format!("status line {}", show(&head_bytes, 200)));
            };
            let mut resp = Resp {
                status,
                ..Resp::default()
            };
            let mut length = None;
            for l in lines {
                let Some((name, value)) = l.split_once(':') else {
                    return Got::Garbled(format!("header line {}", show(l.as_bytes(), 200)));
                };
                let value = value.trim();
                match name.to_ascii_lowercase().as_str() {
                    "content-length" => length = value.parse::<usize>().ok(),
                    "connection" => resp.close = value.eq_ignore_ascii_case("close"),
                    "content-type" => resp.json = value == "application/json",
                    "allow" => resp.allow = Some(value.to_string()),
                    "retry-after" => resp.retry_after = Some(value.to_string()),
                    "transfer-encoding" => {
                        return Got::Garbled(format!("chunked response {status}"))
                    }
                    _ => {}
                }
            }
            if (100..200).contains(&status) {
                if interim {
                    return Got::Resp(resp);
                }
                continue;
            }
            let length = match (head || status == 204 || status == 304, length) {
                (true, _) => 0,
                (false, Some(n)) => n,
                (false, None) => return Got::Garbled(format!("{status} without a length")),
            };
            while self.buf.len() - self.pos < length {
                match self.fill() {
                    Ok(()) => {}
                    Err(Got::Closed) => return Got::Garbled(format!("{status}: body cut short")),
                    Err(got) => return got,
                }
            }
            resp.body = self.buf[self.pos..self.pos + length].to_vec();
            self.pos += length;
            return Got::Resp(resp);
        }
    }
}

// ---------------------------------------------------------------------------------------
// HTTP/2 (h2c with prior knowledge), framed by hand

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const PRIORITY: u8 = 0x2;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY_FLAG: u8 = 0x20;
/// The largest frame payload a peer must accept without asking.
const FRAME_MAX: usize = 16384;

fn frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(9 + payload.len());
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    f.push(ty);
    f.push(flags);
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An HPACK integer with a `bits`-bit prefix; `first` holds the representation's high bits.
fn hpack_int(out: &mut Vec<u8>, first: u8, bits: u32, mut v: usize) {
    let max = (1usize << bits) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128 + 128) as u8);
        v /= 128;
    }
    out.push(v as u8);
}

/// An HPACK string literal, without Huffman coding.
fn hpack_str(out: &mut Vec<u8>, s: &[u8]) {
    hpack_int(out, 0, 7, s.len());
    out.extend_from_slice(s);
}

/// One header field: mostly a literal without indexing (by static-table name where one fits),
/// sometimes never-indexed or with incremental indexing, or a fully indexed static entry.
fn hpack_field(rng: &mut Rng, out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    let indexed = match (name, value) {
        (b":method", b"GET") => Some(0x82),
        (b":method", b"POST") => Some(0x83),
        (b":scheme", b"http") => Some(0x86),
        _ => None,
    };
    if let Some(byte) = indexed.filter(|_| rng.one_in(2)) {
        out.push(byte);
        return;
    }
    let static_name = match name {
        b":authority" => Some(1),
        b":method" => Some(2),
        b":path" => Some(4),
        b":scheme" => Some(6),
        b"content-length" => Some(28),
        b"content-type" => Some(31),
        b"host" => Some(38),
        b"user-agent" => Some(58),
        _ => None,
    };
    let (first, bits) = match rng.below(10) {
        0 => (0x10, 4),
        1 => (0x40, 6),
        _ => (0x00, 4),
    };
    match static_name {
        Some(i) if rng.percent(70) => hpack_int(out, first, bits, i),
        _ => {
            hpack_int(out, first, bits, 0);
            hpack_str(out, name);
        }
    }
    hpack_str(out, value);
}

/// The `:status` of a response header block as nginx encodes it: a static-table index, or a
/// literal with the `:status` name and three raw digits, after any table size update.
fn first_status(block: &[u8]) -> Option<u16> {
    let mut i = 0;
    while block.get(i)? & 0xe0 == 0x20 {
        let prefix_full = block[i] & 0x1f == 0x1f;
        i += 1;
        if prefix_full {
            while block.get(i)? & 0x80 != 0 {
                i += 1;
            }
            i += 1;
        }
    }
    let b = *block.get(i)?;
    if b & 0x80 != 0 {
        return match b & 0x7f {
            8 => Some(200),
            9 => Some(204),
            10 => Some(206),
            11 => Some(304),
            12 => Some(400),
            13 => Some(404),
            14 => Some(500),
            _ => None,
        };
    }
    if !matches!(b, 0x48 | 0x08 | 0x18) || *block.get(i + 1)? != 3 {
        return None;
    }
    std::str::from_utf8(block.get(i + 2..i + 5)?)
        .ok()?
        .parse()
        .ok()
}

/// Frames sent as one piece, in stream order.
struct Unit {
    bytes: Vec<u8>,
    /// Bytes counted against flow-control windows (DATA payloads).
    flow: usize,
    /// Opens the stream (its HEADERS).
    opens: bool,
    /// Carries END_STREAM.
    ends: bool,
    /// Body bytes it carries.
    body_bytes: usize,
}

struct H2Request {
    id: u32,
    units: Vec<Unit>,
    expect: Expect,
    /// The client resets the stream before its end: nothing may be queued.
    client_reset: bool,
    /// A malformed header field: nginx may end the whole connection over it (an empty
    /// `:method` leaves its HPACK decoder out of step, and it sends GOAWAY).
    spoils_connection: bool,
    /// The header fields, for reports.
    summary: Vec<u8>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum H2Fault {
    UpperCaseName,
    NulInValue,
    NoPath,
    NoAuthority,
    BadMethod,
    LengthTooBig,
    LengthTooSmall,
    ClientReset,
    HugeValue,
}

const H2_FAULTS: &[(usize, H2Fault)] = &[
    (1, H2Fault::UpperCaseName),
    (1, H2Fault::NulInValue),
    (1, H2Fault::NoPath),
    (1, H2Fault::NoAuthority),
    (1, H2Fault::BadMethod),
    (2, H2Fault::LengthTooBig),
    (2, H2Fault::LengthTooSmall),
    (3, H2Fault::ClientReset),
    (1, H2Fault::HugeValue),
];

fn gen_h2(rng: &mut Rng, id: u32, faults: bool) -> H2Request {
    use H2Fault::*;
    let fault = match faults && rng.percent(6) {
        true => Some(rng.weighted(H2_FAULTS)),
        false => None,
    };
    let (path, loc) = {
        let loc = gen_loc(rng);
        gen_path(rng, loc, false)
    };
    let method = match fault {
        Some(BadMethod) => *rng.pick(&["post", "P0ST", "GE T", ""]),
        _ => rng.weighted(&[
            (78, "POST"),
            (8, "PUT"),
            (4, "GET"),
            (3, "HEAD"),
            (2, "DELETE"),
            (2, "OPTIONS"),
            (1, "M-SEARCH"),
        ]),
    };
    let mut body = gen_body(rng);
    if matches!(fault, Some(ClientReset | LengthTooSmall)) && body.is_empty() {
        let n = rng.range(1, 50);
        body = rng.printable(n);
    }
    let topics = gen_topic(rng);
    let keys = gen_key(rng);

    let mut pseudo: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (b":method".to_vec(), method.as_bytes().to_vec()),
        (b":scheme".to_vec(), b"http".to_vec()),
        (b":path".to_vec(), path.into_bytes()),
    ];
    let mut regular: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    match (fault, rng.one_in(10)) {
        (Some(NoAuthority), _) => {}
        (_, true) => regular.push((b"host".to_vec(), b"localhost".to_vec())),
        (_, false) => pseudo.push((b":authority".to_vec(), b"localhost".to_vec())),
    }
    if fault == Some(NoPath) {
        pseudo.retain(|f| f.0 != b":path");
    }
    for v in &topics {
        regular.push((b"topic".to_vec(), v.clone()));
    }
    for v in &keys {
        regular.push((b"key".to_vec(), v.clone()));
    }
    regular.extend(gen_noise(rng, true));
    let mut declared = None;
    let length = match fault {
        Some(LengthTooBig) => Some(body.len() + rng.range(1, 100)),
        Some(LengthTooSmall) => Some(rng.below(body.len())),
        _ if rng.percent(60) => Some(body.len()),
        _ => None,
    };
    if let Some(n) = length {
        regular.push((b"content-length".to_vec(), n.to_string().into_bytes()));
        declared = Some(n);
    }
    shuffle(rng, &mut pseudo);
    shuffle(rng, &mut regular);
    // Repeated topic and key fields are joined in their order: restore it after the shuffle.
    for (name, values) in [(&b"topic"[..], &topics), (&b"key"[..], &keys)] {
        let mut next = values.iter();
        for f in regular.iter_mut().filter(|f| f.0 == name) {
            f.1 = next.next().unwrap().clone();
        }
    }
    match fault {
        Some(UpperCaseName) => regular.push((b"X-Upper".to_vec(), b"v".to_vec())),
        Some(NulInValue) => regular.push((b"x-fuzz".to_vec(), b"a\0b".to_vec())),
        Some(HugeValue) => {
            let n = rng.range(9000, 12000);
            let name = *rng.pick(&["x-big", "key", "topic"]);
            regular.push((name.as_bytes().to_vec(), rng.printable(n)));
        }
        _ => {}
    }
    let mut fields = pseudo;
    fields.extend(regular);
    if rng.percent(2) {
        // nginx does not insist on pseudo-headers first.
        let f = fields.remove(0);
        fields.push(f);
    }
    let mut block = Vec::new();
    let mut summary = Vec::new();
    for (name, value) in &fields {
        hpack_field(rng, &mut block, name, value);
        summary.extend_from_slice(name);
        summary.extend_from_slice(b": ");
        summary.extend_from_slice(&value[..value.len().min(64)]);
        summary.extend_from_slice(b"; ");
    }
    summary.extend_from_slice(format!("body {} bytes", body.len()).as_bytes());

    let mut units = Vec::new();
    if rng.percent(3) {
        // PRIORITY on a stream not yet open is allowed.
        units.push(Unit {
            bytes: frame(PRIORITY, 0, id, &[0, 0, 0, 0, 16]),
            flow: 0,
            opens: false,
            ends: false,
            body_bytes: 0,
        });
    }
    let end_on_headers = body.is_empty() && fault != Some(ClientReset) && rng.percent(60);
    units.push(Unit {
        bytes: header_frames(rng, id, &block, end_on_headers),
        flow: 0,
        opens: true,
        ends: end_on_headers,
        body_bytes: 0,
    });
    if !end_on_headers {
        units.extend(data_frames(rng, id, &body));
    }
    if rng.percent(3) {
        // An unknown frame type must be ignored, wherever it comes.
        let at = rng.range(1, units.len());
        let n = rng.below(20);
        let mut payload = Vec::new();
        rng.bytes(n, &mut payload);
        units.insert(
            at,
            Unit {
                bytes: frame(0xfa, rng.below(256) as u8, id, &payload),
                flow: 0,
                opens: false,
                ends: false,
                body_bytes: 0,
            },
        );
    }
    let client_reset = fault == Some(ClientReset);
    if client_reset {
        // Cut before END_STREAM and reset: an abandoned upload.
        // With a declared length nginx has the whole body at its last byte, END_STREAM or
        // not: cut before the last DATA frame that carries body bytes.
        let last = units.iter().rposition(|u| u.body_bytes > 0).unwrap();
        let opened = units.iter().position(|u| u.opens).unwrap();
        units.truncate(rng.range(opened + 1, last));
        units.push(Unit {
            bytes: frame(RST_STREAM, 0, id, &8u32.to_be_bytes()),
            flow: 0,
            opens: false,
            ends: true,
            body_bytes: 0,
        });
    }

    let mut expect = predict(&Meaning {
        loc,
        ingest: matches!(method, "POST" | "PUT"),
        head: method == "HEAD",
        topic: evaluate(&topics, false),
        key: evaluate(&keys, false),
        body: &body,
        declared,
    });
    match fault {
        None => {}
        Some(LengthTooBig | LengthTooSmall | ClientReset) => {
            expect.want = Want::Refused;
            expect.event = None;
            expect.may_drop = true;
        }
        Some(_) => {
            expect.want = Want::Refused;
            expect.event = None;
            expect.module = false;
            expect.may_drop = true;
        }
    }
    H2Request {
        id,
        units,
        expect,
        client_reset,
        spoils_connection: matches!(
            fault,
            Some(UpperCaseName | NulInValue | NoPath | NoAuthority | BadMethod | HugeValue)
        ),
        summary,
    }
}

/// HEADERS (and CONTINUATION) frames for a header block, with padding and priority now and then.
fn header_frames(rng: &mut Rng, id: u32, block: &[u8], end_stream: bool) -> Vec<u8> {
    let mut pieces: Vec<&[u8]> = block.chunks(FRAME_MAX - 300).collect();
    if pieces.len() == 1 && block.len() > 2 && rng.percent(10) {
        let cut = rng.range(1, block.len() - 1);
        pieces = vec![&block[..cut], &block[cut..]];
    }
    let mut out = Vec::new();
    for (i, piece) in pieces.iter().enumerate() {
        let last = i + 1 == pieces.len();
        let mut flags = if last { END_HEADERS } else { 0 };
        if i > 0 {
            out.extend(frame(CONTINUATION, flags, id, piece));
            continue;
        }
        if end_stream {
            flags |= END_STREAM;
        }
        let mut payload = Vec::new();
        let pad = match rng.percent(5) {
            true => rng.below(40),
            false => 0,
        };
        if pad > 0 {
            flags |= PADDED;
            payload.push(pad as u8);
        }
        if rng.percent(5) {
            flags |= PRIORITY_FLAG;
            payload.extend_from_slice(&[0, 0, 0, 0, rng.below(256) as u8]);
        }
        payload.extend_from_slice(piece);
        payload.resize(payload.len() + pad, 0);
        out.extend(frame(HEADERS, flags, id, &payload));
    }
    out
}

/// The body as DATA frames of random sizes, some padded, some empty; the last ends the stream.
fn data_frames(rng: &mut Rng, id: u32, body: &[u8]) -> Vec<Unit> {
    // Padding counts against the stream window: keep bodies that fit in the initial window
    // within it, so that only bodies over the limit need nginx's WINDOW_UPDATEs.
    let may_pad = body.len() < 60_000;
    let mut units = Vec::new();
    let mut rest = body;
    loop {
        let n = match rng.below(3) {
            0 => rest.len().min(FRAME_MAX),
            _ => rng.range(rest.len().min(1), rest.len().min(FRAME_MAX)),
        };
        let piece = &rest[..n];
        rest = &rest[n..];
        let extra_end = rest.is_empty() && rng.percent(10);
        let ends = rest.is_empty() && !extra_end;
        let mut flags = if ends { END_STREAM } else { 0 };
        let mut payload = Vec::new();
        if may_pad && rng.percent(10) {
            let pad = rng.below(32);
            flags |= PADDED;
            payload.push(pad as u8);
            payload.extend_from_slice(piece);
            payload.resize(payload.len() + pad, 0);
        } else {
            payload.extend_from_slice(piece);
        }
        units.push(Unit {
            flow: payload.len(),
            bytes: frame(DATA, flags, id, &payload),
            opens: false,
            ends,
            body_bytes: piece.len(),
        });
        if rest.is_empty() {
            if extra_end {
                units.push(Unit {
                    bytes: frame(DATA, END_STREAM, id, &[]),
                    flow: 0,
                    opens: false,
                    ends: true,
                    body_bytes: 0,
                });
            }
            return units;
        }
        if rng.percent(5) {
            units.push(Unit {
                bytes: frame(DATA, 0, id, &[]),
                flow: 0,
                opens: false,
                ends: false,
                body_bytes: 0,
            });
        }
    }
}

/// What the client knows of one stream.
#[derive(Default)]
struct H2Stream {
    window: i64,
    block: Vec<u8>,
    status: Option<u16>,
    body: Vec<u8>,
    /// nginx ended the stream (END_STREAM).
    ended: bool,
    /// nginx reset the stream, with this code.
    reset: Option<u32>,
    sent_end: bool,
    /// When its last frame was sent, and when nginx finished it.
    sent_at: Option<Instant>,
    finished_at: Option<Instant>,
}

impl H2Stream {
    fn finished(&self) -> bool {
        (self.status.is_some() && self.ended) || self.reset.is_some()
    }
}

/// A client connection: flow control, SETTINGS and PING acknowledgements, response headers
/// decoded only as far as `:status`.
struct H2Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    pos: usize,
    conn_window: i64,
    initial_window: i64,
    streams: HashMap<u32, H2Stream>,
    goaway: Option<u32>,
    /// Why the connection ended, if it did.
    ended: Option<Got>,
    /// Frames from nginx that break the protocol.
    errors: Vec<String>,
    /// The longest wait for a window to open, and for which request.
    longest_block: (Duration, usize),
    window_waits: u64,
}

impl H2Conn {
    fn new(stream: TcpStream) -> H2Conn {
        H2Conn {
            stream,
            buf: Vec::new(),
            pos: 0,
            conn_window: 65535,
            initial_window: 65535,
            streams: HashMap::new(),
            goaway: None,
            ended: None,
            errors: Vec::new(),
            longest_block: (Duration::ZERO, 0),
            window_waits: 0,
        }
    }

    fn send(&mut self, bytes: &[u8]) -> bool {
        if self.ended.is_some() {
            return false;
        }
        match self.stream.write_all(bytes) {
            Ok(()) => true,
            Err(e) => {
                self.ended = Some(io_end(&e));
                false
            }
        }
    }

    /// Reads and handles one frame; false once the connection has ended.
    fn pump(&mut self) -> bool {
        if self.ended.is_some() {
            return false;
        }
        while self.buf.len() - self.pos < 9
            || self.buf.len() - self.pos
                < 9 + (u32::from_be_bytes([
                    0,
                    self.buf[self.pos],
                    self.buf[self.pos + 1],
                    self.buf[self.pos + 2],
                ]) as usize)
        {
            if self.pos > 0 && self.pos == self.buf.len() {
                self.buf.clear();
                self.pos = 0;
            }
            let mut chunk = [0u8; 16384];
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    self.ended = Some(Got::Closed);
                    return false;
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) => {
                    self.ended = Some(io_end(&e));
                    return false;
                }
            }
        }
        let h = &self.buf[self.pos..self.pos + 9];
        let len = u32::from_be_bytes([0, h[0], h[1], h[2]]) as usize;
        let (ty, flags) = (h[3], h[4]);
        let id = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
        let payload = self.buf[self.pos + 9..self.pos + 9 + len].to_vec();
        self.pos += 9 + len;
        self.handle(ty, flags, id, payload);
        if let Some(st) = self.streams.get_mut(&id) {
            if st.finished() && st.finished_at.is_none() {
                st.finished_at = Some(Instant::now());
            }
        }
        true
    }

    fn handle(&mut self, ty: u8, flags: u8, id: u32, mut payload: Vec<u8>) {
        match ty {
            SETTINGS if flags & ACK == 0 => {
                for s in payload.chunks_exact(6) {
                    let value = i64::from(u32::from_be_bytes([s[2], s[3], s[4], s[5]]));
                    if u16::from_be_bytes([s[0], s[1]]) == 0x4 {
                        let delta = value - self.initial_window;
                        self.initial_window = value;
                        for st in self.streams.values_mut() {
                            st.window += delta;
                        }
                    }
                }
                self.send(&frame(SETTINGS, ACK, 0, &[]));
            }
            WINDOW_UPDATE if payload.len() == 4 => {
                let inc =
                    i64::from(u32::from_be_bytes(payload[..4].try_into().unwrap()) & 0x7fff_ffff);
                match id {
                    0 => self.conn_window += inc,
                    _ => {
                        if let Some(st) = self.streams.get_mut(&id) {
                            st.window += inc;
                        }
                    }
                }
            }
            PING if flags & ACK == 0 => {
                self.send(&frame(PING, ACK, 0, &payload));
            }
            HEADERS | CONTINUATION | DATA => {
                if ty != CONTINUATION && flags & PADDED != 0 {
                    let pad = usize::from(payload.first().copied().unwrap_or(0));
                    payload.truncate(payload.len().saturating_sub(pad));
                    payload.remove(0);
                }
                if ty == HEADERS && flags & PRIORITY_FLAG != 0 {
                    payload.drain(..5.min(payload.len()));
                }
                let Some(st) = self.streams.get_mut(&id) else {
                    self.errors
                        .push(format!("frame {ty} on unknown stream {id}"));
                    return;
                };
                if ty == DATA {
                    st.body.extend_from_slice(&payload);
                } else {
                    st.block.extend_from_slice(&payload);
                    if flags & END_HEADERS != 0 {
                        match first_status(&st.block) {
                            Some(s) => st.status = Some(s),
                            None => self
                                .errors
                                .push(format!("undecodable :status in {}", show(&st.block, 40))),
                        }
                    }
                }
                if flags & END_STREAM != 0 && ty != CONTINUATION {
                    st.ended = true;
                }
                if ty == DATA && !payload.is_empty() {
                    // Keep nginx's send windows open, whatever window the client announced.
                    let inc = (payload.len() as u32).to_be_bytes();
                    let mut updates = frame(WINDOW_UPDATE, 0, 0, &inc);
                    if flags & END_STREAM == 0 {
                        updates.extend(frame(WINDOW_UPDATE, 0, id, &inc));
                    }
                    self.send(&updates);
                }
            }
            RST_STREAM => {
                let code = payload
                    .get(..4)
                    .map_or(u32::MAX, |c| u32::from_be_bytes(c.try_into().unwrap()));
                if let Some(st) = self.streams.get_mut(&id) {
                    st.reset = Some(code);
                }
            }
            GOAWAY => {
                let code = payload
                    .get(4..8)
                    .map_or(u32::MAX, |c| u32::from_be_bytes(c.try_into().unwrap()));
                self.goaway = Some(code);
            }
            SETTINGS | PING => {}
            _ => self.errors.push(format!("unexpected frame type {ty}")),
        }
    }

    /// Sends the requests' frames, interleaving streams at random (a stream opens only after
    /// every stream with a lower id), within the flow-control windows. A stream nginx has
    /// finished (answered early, or reset) gets no more frames; one still open is cancelled.
    fn send_requests(&mut self, rng: &mut Rng, reqs: &[H2Request]) {
        for r in reqs {
            let window = self.initial_window;
            self.streams.insert(
                r.id,
                H2Stream {
                    window,
                    ..H2Stream::default()
                },
            );
        }
        let mut queues: Vec<VecDeque<&Unit>> =
            reqs.iter().map(|r| r.units.iter().collect()).collect();
        let in_order = rng.one_in(3);
        let mut opened = 0;
        let mut out = Vec::new();
        // Bounded: each turn sends a unit, drops a stream, or reads a frame.
        for _ in 0..100_000 {
            let ready: Vec<usize> = (0..queues.len())
                .filter(|&i| i <= opened && !queues[i].is_empty())
                .collect();
            let Some(&first) = ready.first() else { break };
            let i = if in_order { first } else { *rng.pick(&ready) };
            let id = reqs[i].id;
            let unit = *queues[i].front().unwrap();
            let st = &self.streams[&id];
            if !unit.opens && i < opened && st.finished() {
                if !st.sent_end && st.reset.is_none() {
                    out.extend(frame(RST_STREAM, 0, id, &8u32.to_be_bytes()));
                }
                queues[i].clear();
                continue;
            }
            if unit.flow as i64 > self.conn_window.min(st.window) {
                self.window_waits += 1;
                let blocked = Instant::now();
                if !self.send(&std::mem::take(&mut out)) || !self.pump() {
                    return;
                }
                if blocked.elapsed() > self.longest_block.0 {
                    self.longest_block = (blocked.elapsed(), i);
                }
                continue;
            }
            self.conn_window -= unit.flow as i64;
            let st = self.streams.get_mut(&id).unwrap();
            st.window -= unit.flow as i64;
            st.sent_end |= unit.ends;
            st.sent_at = Some(Instant::now());
            if unit.opens {
                opened += 1;
            }
            out.extend_from_slice(&unit.bytes);
            queues[i].pop_front();
            if out.len() > 65536 && !self.send(&std::mem::take(&mut out)) {
                return;
            }
        }
        self.send(&out);
    }
}

/// Connection-level extras: harmless ones nginx must ignore or answer, and fatal ones after
/// which nginx ends the connection.
fn connection_extra(rng: &mut Rng, fatal: bool) -> Vec<u8> {
    if !fatal {
        return match rng.below(4) {
            0 => frame(PING, 0, 0, b"fuzzping"),
            1 => frame(0xfb, 0, 0, b"unknown"),
            2 => frame(SETTINGS, 0, 0, &[]),
            _ => frame(WINDOW_UPDATE, 0, 0, &1000u32.to_be_bytes()),
        };
    }
    match rng.below(6) {
        0 => {
            let mut junk = Vec::new();
            let n = rng.range(9, 64);
            rng.bytes(n, &mut junk);
            junk
        }
        1 => frame(DATA, 0, 0, b"data on stream 0"),
        2 => frame(WINDOW_UPDATE, 0, 0, &0u32.to_be_bytes()),
        3 => frame(HEADERS, END_HEADERS, 2, &[0x82]),
        4 => frame(SETTINGS, 0, 0, &[0, 4, 0, 0, 0]),
        _ => frame(PING, 0, 0, b"short"),
    }
}

// ---------------------------------------------------------------------------------------
// Clients and the ledger

#[derive(Clone, Copy)]
struct Ports {
    h1: u16,
    h2: u16,
}

/// What a client thread saw.
#[derive(Default)]
struct Tally {
    h1: u64,
    h2: u64,
    statuses: BTreeMap<u16, u64>,
    /// Events answered 2xx, by digest: each must be in Kafka exactly once.
    accepted: HashMap<u128, u32>,
    /// Events whose answer was lost with their connection: each may be in Kafka, at most once.
    unknown: HashMap<u128, u32>,
    unanswered: u64,
    sessions: BTreeMap<&'static str, u64>,
    /// Broken expectations by kind: a count and the first few cases.
    findings: BTreeMap<&'static str, (u64, Vec<String>)>,
    /// Paths the run went through, to show what it covered.
    covered: BTreeMap<&'static str, u64>,
    /// The longest wait for an answer, and for what (reported: timing is not asserted).
    slowest: Duration,
    slowest_case: String,
    /// With `DESCRIBE`: the requests behind each event, and what became of them; and every
    /// request with its outcome, to search for the bytes of an unexpected message.
    described: HashMap<u128, Vec<String>>,
    journal: Vec<String>,
}

impl Tally {
    fn finding(&mut self, kind: &'static str, detail: impl FnOnce() -> String) {
        let entry = self.findings.entry(kind).or_default();
        entry.0 += 1;
        if entry.1.len() < 4 {
            entry.1.push(detail());
        }
    }

    fn saw(&mut self, what: &'static str, n: u64) {
        *self.covered.entry(what).or_default() += n;
    }

    fn merge(&mut self, other: Tally) {
        self.h1 += other.h1;
        self.h2 += other.h2;
        self.unanswered += other.unanswered;
        if other.slowest > self.slowest {
            self.slowest = other.slowest;
            self.slowest_case = other.slowest_case;
        }
        for (k, v) in other.statuses {
            *self.statuses.entry(k).or_default() += v;
        }
        for (k, v) in other.accepted {
            *self.accepted.entry(k).or_default() += v;
        }
        for (k, v) in other.unknown {
            *self.unknown.entry(k).or_default() += v;
        }
        self.journal.extend(other.journal);
        for (k, v) in other.described {
            self.described.entry(k).or_default().extend(v);
        }
        for (k, v) in other.covered {
            *self.covered.entry(k).or_default() += v;
        }
        for (k, v) in other.sessions {
            *self.sessions.entry(k).or_default() += v;
        }
        for (k, (n, mut cases)) in other.findings {
            let entry = self.findings.entry(k).or_default();
            entry.0 += n;
            cases.truncate(4usize.saturating_sub(entry.1.len()));
            entry.1.extend(cases);
        }
    }
}

/// Why a request got no answer.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fate {
    /// nginx never read it, or could not have acted on it (it was cut short).
    NotProcessed,
    /// The connection ended in a way that leaves its fate open.
    Unknown,
    /// It should have been answered.
    Lost(&'static str),
    Hang,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum H1Mode {
    /// One request, then its response, on a keep-alive connection.
    Sequential,
    /// Several requests in one go (in a few writes), then the responses.
    Pipelined,
    /// Like Pipelined, the first bytes written a few at a time.
    Dribbled,
    /// Sequential, waiting for `100 Continue` before each body that asks for it.
    Continue,
    /// Pipelined, then the client shuts down its side.
    HalfClosed,
    /// The last request is cut short and the connection closed (or reset).
    Aborted,
    /// The last request is cut short and the connection left open for nginx to time out.
    Stalled,
}

struct Client {
    rng: Rng,
    ports: Ports,
    tally: Tally,
    /// Stalled connections, waiting for nginx to close them.
    parked: VecDeque<(TcpStream, Instant)>,
    /// Numbers sessions in the `DESCRIBE` journal.
    session: String,
}

impl Client {
    fn run(mut self, quota: u64, deadline: Instant, progress: &AtomicU64) -> Tally {
        while self.tally.h1 + self.tally.h2 < quota && Instant::now() < deadline {
            let before = self.tally.h1 + self.tally.h2;
            if DESCRIBE.load(Ordering::Relaxed) {
                self.session = format!("[{:x}]", self.rng.0);
            }
            if self.rng.percent(12) {
                self.h2_session();
            } else {
                self.h1_session();
            }
            progress.fetch_add(self.tally.h1 + self.tally.h2 - before, Ordering::Relaxed);
            self.check_parked(false);
        }
        self.check_parked(true);
        self.tally
    }

    /// Checks a response against what the request must get, and books its event.
    fn check(&mut self, e: &Expect, r: &Resp, request: &[u8], proto: &'static str) {
        *self.tally.statuses.entry(r.status).or_default() += 1;
        if r.waited > self.tally.slowest {
            self.tally.slowest = r.waited;
            self.tally.slowest_case = format!("{proto} {} {}", r.status, show(request, 300));
        }
        let case = || {
            format!(
                "{proto} {:?} got {} {}: {}",
                e.want,
                r.status,
                show(&r.body, 200),
                show(request, 600)
            )
        };
        let module_json = r.json && !r.body.is_empty();
        let fits = match e.want {
            Want::Accepted => r.status == 204 || (r.status == 503 && module_json),
            Want::Status(s, _) => r.status == s,
            Want::Refused => SANE.contains(&r.status),
        };
        if !fits {
            self.tally.finding("unexpected status", case);
        }
        if (200..300).contains(&r.status) {
            if r.status != 204 || !r.body.is_empty() {
                self.tally.finding("2xx other than an empty 204", case);
            }
            if let Some(id) = e.event {
                *self.tally.accepted.entry(id).or_default() += 1;
            }
        }
        if DESCRIBE.load(Ordering::Relaxed) {
            let text = format!(
                "{} {proto} answered {} {}: {}",
                self.session,
                r.status,
                show(&r.body, 100),
                show(request, 1500)
            );
            if let Some(id) = e.event {
                self.tally
                    .described
                    .entry(id)
                    .or_default()
                    .push(text.clone());
            }
            self.tally.journal.push(text);
        }
        if (200..300).contains(&r.status) {
            return;
        }
        if module_json {
            match module_error(&r.body) {
                Ok(code) if !module_codes(r.status).contains(&code) => self
                    .tally
                    .finding("module error code does not fit the status", case),
                Ok(code) => {
                    if let Want::Status(_, Some(want)) = e.want {
                        if want != code && fits {
                            self.tally.finding("wrong module error code", case);
                        }
                    }
                }
                Err(why) => self
                    .tally
                    .finding("malformed module JSON", || format!("{why}; {}", case())),
            }
        } else if !e.head
            && ((e.module && matches!(r.status, 403 | 404 | 405 | 503))
                || matches!(e.want, Want::Status(s, Some(_)) if s == r.status))
        {
            // Statuses only the module gives, or a refusal the model knows is the module's.
            self.tally.finding("module refusal without JSON", case);
        }
        if proto == "h1" && r.status == 405 && e.module && r.allow.as_deref() != Some("POST, PUT") {
            self.tally.finding("405 without Allow: POST, PUT", case);
        }
        if proto == "h1" && r.status == 503 && r.retry_after.is_none() {
            self.tally.finding("503 without Retry-After", case);
        }
    }

    /// Books a request that got no response.
    fn unanswered(&mut self, e: &Expect, fate: Fate, request: &[u8], proto: &'static str) {
        self.tally.unanswered += 1;
        if DESCRIBE.load(Ordering::Relaxed) {
            let text = format!(
                "{} {proto} unanswered {fate:?}: {}",
                self.session,
                show(request, 1500)
            );
            if let Some(id) = e.event {
                self.tally
                    .described
                    .entry(id)
                    .or_default()
                    .push(text.clone());
            }
            self.tally.journal.push(text);
        }
        let fate = match fate {
            Fate::Lost(_) if e.may_drop => Fate::Unknown,
            f => f,
        };
        match fate {
            Fate::NotProcessed => return,
            Fate::Unknown => {}
            Fate::Lost(why) => self.tally.finding(why, || {
                format!("{proto} {:?}: {}", e.want, show(request, 600))
            }),
            Fate::Hang => self.tally.finding("hang (no answer in 10 s)", || {
                format!("{proto} {:?}: {}", e.want, show(request, 600))
            }),
        }
        if let Some(id) = e.event {
            *self.tally.unknown.entry(id).or_default() += 1;
        }
    }

    fn h1_session(&mut self) {
        use H1Mode::*;
        let mode = self.rng.weighted(&[
            (38, Sequential),
            (34, Pipelined),
            (4, Dribbled),
            (6, Continue),
            (7, HalfClosed),
            (8, Aborted),
            (3, Stalled),
        ]);
        let count = match mode {
            Sequential => self.rng.range(1, 12),
            Pipelined => self.rng.range(2, 16),
            Dribbled => self.rng.range(1, 3),
            Continue => self.rng.range(1, 4),
            HalfClosed => self.rng.range(1, 6),
            Aborted => self.rng.range(1, 4),
            Stalled => 1,
        };
        let mut reqs = Vec::new();
        // The request cut short must be well-formed, or its cut might complete it (a short
        // Content-Length); and it must be the last one.
        let faults = !matches!(mode, Aborted | Stalled);
        for _ in 0..count {
            let r = gen_h1(&mut self.rng, faults);
            let terminal = r.terminal;
            reqs.push(r);
            if terminal {
                break;
            }
        }
        *self.tally.sessions.entry(mode_name(mode)).or_default() += 1;
        // HTTP/1 on the HTTP/2 server too: nginx tells them apart by the preface.
        let port = match self.rng.one_in(10) {
            true => {
                self.tally.saw("h1 sessions on the h2 port", 1);
                self.ports.h2
            }
            false => self.ports.h1,
        };
        let stream = match connect(port) {
            Ok(s) => s,
            Err(e) => {
                self.tally.finding("connect failed", || e.to_string());
                return;
            }
        };
        let mut conn = H1Conn {
            stream,
            buf: Vec::new(),
            pos: 0,
        };
        match mode {
            Sequential | Continue => self.sequential(&mut conn, &reqs, mode == Continue),
            Pipelined | Dribbled | HalfClosed => {
                self.tally.h1 += reqs.len() as u64;
                let all: Vec<u8> = reqs.iter().flat_map(|r| r.bytes.iter().copied()).collect();
                let written = match mode {
                    // Its own generator: how far it gets depends on nginx.
                    Dribbled => conn.dribble(&mut Rng::new(self.rng.next()), &all),
                    _ => conn.send_split(&mut self.rng, &all),
                };
                let half_closed = mode == HalfClosed || reqs.last().unwrap().terminal;
                if half_closed {
                    let _ = conn.stream.shutdown(Shutdown::Write);
                }
                // After a shutdown nginx may close once it has answered the request it is
                // on, without reading the rest of the pipeline: those are not lost.
                self.read_responses(&mut conn, &reqs, written && !half_closed);
            }
            Aborted | Stalled => {
                self.tally.h1 += reqs.len() as u64;
                let (cut_req, complete) = reqs.split_last().unwrap();
                let cut = self.rng.range(1, cut_req.bytes.len() - 1);
                let mut all: Vec<u8> = complete
                    .iter()
                    .flat_map(|r| r.bytes.iter().copied())
                    .collect();
                all.extend_from_slice(&cut_req.bytes[..cut]);
                let written = conn.send_split(&mut self.rng, &all);
                let read_first = self.rng.one_in(2);
                if written && mode == Aborted && read_first {
                    self.read_responses(&mut conn, complete, true);
                } else {
                    for r in complete {
                        self.unanswered(&r.expect, Fate::Unknown, &r.bytes, "h1");
                    }
                }
                // Nothing may come of a request cut short.
                self.unanswered(&cut_req.expect, Fate::NotProcessed, &cut_req.bytes, "h1");
                if mode == Stalled {
                    self.parked.push_back((conn.stream, Instant::now()));
                } else if self.rng.one_in(2) {
                    set_linger_zero(&conn.stream);
                }
            }
        }
    }

    /// One request at a time; with `wait_continue`, bodies that ask for it wait for
    /// `100 Continue` (or a final answer, after which the body is sent anyway unless nginx
    /// closes: it discards it).
    fn sequential(&mut self, conn: &mut H1Conn, reqs: &[H1Request], wait_continue: bool) {
        for r in reqs {
            self.tally.h1 += 1;
            if wait_continue && r.continue_100 && r.head_len < r.bytes.len() {
                if !conn.send(&r.bytes[..r.head_len]) {
                    self.unanswered(&r.expect, Fate::Unknown, &r.bytes, "h1");
                    return;
                }
                match conn.response(r.expect.head, true) {
                    Got::Resp(resp) if resp.status == 100 => self.tally.saw("h1 100 Continue", 1),
                    Got::Resp(resp) => {
                        self.tally.saw("h1 final answer before the body", 1);
                        self.check(&r.expect, &resp, &r.bytes, "h1");
                        if resp.close || !conn.send(&r.bytes[r.head_len..]) {
                            return;
                        }
                        continue;
                    }
                    got => {
                        self.ended(got, r, "waiting for 100 Continue");
                        return;
                    }
                }
                if !conn.send(&r.bytes[r.head_len..]) {
                    self.unanswered(&r.expect, Fate::Unknown, &r.bytes, "h1");
                    return;
                }
            } else if !conn.send(&r.bytes) {
                self.unanswered(&r.expect, Fate::Unknown, &r.bytes, "h1");
                return;
            }
            if r.terminal {
                let _ = conn.stream.shutdown(Shutdown::Write);
            }
            if !self.read_responses(conn, std::slice::from_ref(r), true) {
                return;
            }
        }
    }

    /// Books a request whose connection ended (or hung) before its answer.
    fn ended(&mut self, got: Got, r: &H1Request, when: &'static str) {
        let fate = match got {
            Got::TimedOut => Fate::Hang,
            Got::Garbled(why) => {
                self.tally
                    .finding("garbled response", || format!("{why} ({when})"));
                Fate::Unknown
            }
            _ => Fate::Lost("connection closed before a response"),
        };
        self.unanswered(&r.expect, fate, &r.bytes, "h1");
    }

    /// Reads the responses to `reqs`, in order; after a terminal request, also whatever nginx
    /// answers to the bytes that followed it. `strict`: every request was written and the
    /// client kept its side open, so a connection that ends early has lost an answer.
    /// Returns whether the connection can take another request.
    fn read_responses(&mut self, conn: &mut H1Conn, reqs: &[H1Request], strict: bool) -> bool {
        let mut closing = false;
        let mut dead = false;
        for r in reqs {
            if closing || dead {
                // After `Connection: close` nginx reads nothing more.
                let fate = if closing {
                    Fate::NotProcessed
                } else {
                    Fate::Unknown
                };
                self.unanswered(&r.expect, fate, &r.bytes, "h1");
                continue;
            }
            match conn.response(r.expect.head, false) {
                Got::Resp(resp) => {
                    self.check(&r.expect, &resp, &r.bytes, "h1");
                    closing = resp.close;
                }
                got @ (Got::Closed | Got::Reset) if !strict => {
                    let _ = got;
                    self.unanswered(&r.expect, Fate::Unknown, &r.bytes, "h1");
                    dead = true;
                }
                got => {
                    self.ended(got, r, "reading a response");
                    dead = true;
                }
            }
        }
        if reqs.last().is_some_and(|r| r.terminal) && !closing && !dead {
            // Whatever nginx makes of the bytes after a broken request must be a refusal.
            for _ in 0..4 {
                match conn.response(false, false) {
                    Got::Resp(resp) => {
                        self.tally
                            .saw("h1 answers to bytes after a broken request", 1);
                        *self.tally.statuses.entry(resp.status).or_default() += 1;
                        if !SANE.contains(&resp.status) {
                            self.tally
                                .finding("unexpected status after a broken request", || {
                                    format!(
                                        "{} {}",
                                        resp.status,
                                        show(&reqs.last().unwrap().bytes, 600)
                                    )
                                });
                        }
                        if resp.close {
                            break;
                        }
                    }
                    Got::TimedOut => {
                        self.tally.finding("hang (no answer in 10 s)", || {
                            format!("after {}", show(&reqs.last().unwrap().bytes, 600))
                        });
                        break;
                    }
                    _ => break,
                }
            }
            return false;
        }
        !closing && !dead
    }

    fn h2_session(&mut self) {
        let count = self.rng.range(1, 10);
        let reqs: Vec<H2Request> = (0..count)
            .map(|i| gen_h2(&mut self.rng, 1 + 2 * i as u32, true))
            .collect();
        let mut fatal = self.rng.percent(4);
        let benign = self.rng.percent(8);
        let abandon = self.rng.percent(3);
        let name = match (fatal, abandon) {
            (true, _) => "h2 ended by a connection error",
            (_, true) => "h2 abandoned",
            _ => "h2",
        };
        *self.tally.sessions.entry(name).or_default() += 1;
        self.tally.h2 += reqs.len() as u64;
        let stream = match connect(self.ports.h2) {
            Ok(s) => s,
            Err(e) => {
                self.tally.finding("connect failed", || e.to_string());
                return;
            }
        };
        let mut h2 = H2Conn::new(stream);
        let mut hello = PREFACE.to_vec();
        let mut settings = Vec::new();
        for (id, values) in [
            (0x1u16, &[0u32, 100, 4096][..]),
            (0x2, &[0]),
            (0x4, &[65535, 16, 1 << 20]),
            (0x5, &[16384]),
        ] {
            if self.rng.one_in(3) {
                settings.extend_from_slice(&id.to_be_bytes());
                settings.extend_from_slice(&self.rng.pick(values).to_be_bytes());
            }
        }
        hello.extend(frame(SETTINGS, 0, 0, &settings));
        let split = self.rng.below(hello.len() + 1).max(1);
        h2.send(&hello[..split]);
        h2.send(&hello[split..]);

        // The interleaving reacts to nginx's answers: it draws from its own generator, so that
        // a seed always makes the same requests.
        h2.send_requests(&mut Rng::new(self.rng.next()), &reqs);
        if benign {
            let extra = connection_extra(&mut self.rng, false);
            h2.send(&extra);
        }
        if fatal {
            let extra = connection_extra(&mut self.rng, true);
            h2.send(&extra);
        }
        fatal |= reqs.iter().any(|r| r.spoils_connection);
        if abandon {
            set_linger_zero(&h2.stream);
            for r in &reqs {
                let fate = if r.client_reset {
                    Fate::NotProcessed
                } else {
                    Fate::Unknown
                };
                self.unanswered(&r.expect, fate, &r.summary, "h2");
            }
            return;
        }
        let settled = |h2: &H2Conn| {
            reqs.iter()
                .all(|r| r.client_reset || h2.streams[&r.id].finished())
        };
        // Bounded: nginx sends a few frames per stream.
        for _ in 0..10_000 {
            if settled(&h2) || !h2.pump() {
                break;
            }
        }
        if self.rng.one_in(3) && h2.ended.is_none() {
            h2.send(&frame(GOAWAY, 0, 0, &[0; 8]));
        }

        for r in &reqs {
            let st = &h2.streams[&r.id];
            if let (Some(status), true) = (st.status, st.ended) {
                let resp = Resp {
                    status,
                    json: st.body.starts_with(b"{\"error\""),
                    body: st.body.clone(),
                    waited: match (st.sent_at, st.finished_at) {
                        (Some(sent), Some(done)) => done.saturating_duration_since(sent),
                        _ => Duration::ZERO,
                    },
                    ..Resp::default()
                };
                if status == 413 {
                    self.tally.saw("h2 413", 1);
                }
                let request = [&r.summary[..], b"; client SETTINGS ", &settings].concat();
                self.check(&r.expect, &resp, &request, "h2");
                continue;
            }
            let fate = match (&h2.ended, st.reset) {
                _ if r.client_reset => Fate::NotProcessed,
                _ if fatal => Fate::Unknown,
                (_, Some(_)) => Fate::Lost("h2 stream reset before a response"),
                (Some(Got::TimedOut), _) => Fate::Hang,
                _ => Fate::Lost("h2 connection ended before a response"),
            };
            self.unanswered(&r.expect, fate, &r.summary, "h2");
        }
        self.tally
            .saw("h2 waits for nginx's WINDOW_UPDATE", h2.window_waits);
        let resets = reqs
            .iter()
            .filter(|r| h2.streams[&r.id].reset.is_some())
            .count();
        self.tally.saw("h2 streams reset by nginx", resets as u64);
        if h2.goaway.is_some() {
            self.tally.saw("h2 GOAWAY from nginx", 1);
        }
        if h2.longest_block.0 > self.tally.slowest {
            let r = &reqs[h2.longest_block.1];
            self.tally.slowest = h2.longest_block.0;
            self.tally.slowest_case = format!(
                "h2 waiting for a window to send {:?}: {}; client SETTINGS {}",
                r.expect.want,
                show(&r.summary, 300),
                show(&settings, 100)
            );
        }
        let errors = std::mem::take(&mut h2.errors);
        for e in errors {
            self.tally.finding("h2 protocol error from nginx", || e);
        }
        if let (Some(code), false) = (h2.goaway, fatal) {
            self.tally
                .finding("h2 GOAWAY without a connection error", || {
                    format!("code {code}")
                });
        }
    }

    /// Stalled connections must be closed by nginx (client timeouts); with `all`, waits for
    /// every one of them.
    fn check_parked(&mut self, all: bool) {
        let deadline = Instant::now() + STALL_LIMIT + Duration::from_secs(1);
        loop {
            let mut kept = VecDeque::new();
            let (mut overdue, mut closed) = (0, 0);
            for (stream, since) in self.parked.drain(..) {
                let _ = stream.set_nonblocking(true);
                let mut buf = [0u8; 4096];
                let open = loop {
                    match (&stream).read(&mut buf) {
                        Ok(0) => break false,
                        Ok(_) => continue,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break true,
                        Err(_) => break false,
                    }
                };
                if !open {
                    closed += 1;
                } else if since.elapsed() > STALL_LIMIT {
                    overdue += 1;
                } else if open {
                    kept.push_back((stream, since));
                }
            }
            self.parked = kept;
            self.tally.saw("h1 stalls cut off by nginx", closed);
            for _ in 0..overdue {
                self.tally
                    .finding("stalled connection not closed by nginx", String::new);
            }
            // Bounded: at most 8 stalls in flight per client.
            let wait = if all {
                !self.parked.is_empty()
            } else {
                self.parked.len() > 8
            };
            if !wait || Instant::now() > deadline {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn mode_name(mode: H1Mode) -> &'static str {
    match mode {
        H1Mode::Sequential => "h1 sequential",
        H1Mode::Pipelined => "h1 pipelined",
        H1Mode::Dribbled => "h1 dribbled",
        H1Mode::Continue => "h1 100-continue",
        H1Mode::HalfClosed => "h1 half-closed",
        H1Mode::Aborted => "h1 aborted",
        H1Mode::Stalled => "h1 stalled",
    }
}

// ---------------------------------------------------------------------------------------
// Reading Kafka back, and looking at the system

/// What the reader found in Kafka.
#[derive(Default)]
struct ReadBack {
    seen: HashMap<u128, u32>,
    messages: u64,
    bytes: u64,
    /// Offsets skipped: the mock broker dropped messages before they were read.
    gaps: i64,
    errors: u64,
    first_error: Option<String>,
    drained: bool,
    /// With `DESCRIBE`: every message, shortened, and its value as `show` writes it.
    described: HashMap<u128, (String, String)>,
}

/// Follows every partition of the fuzz topics from the beginning during the run (the mock
/// broker keeps only 5 MB per partition); once `stop` is set, reads up to the high
/// watermarks and returns.
fn spawn_reader(brokers: String, stop: Arc<AtomicBool>) -> JoinHandle<ReadBack> {
    std::thread::spawn(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", "http-fuzz")
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .create()
            .unwrap();
        let mut list = TopicPartitionList::new();
        for t in TOPICS {
            for p in 0..PARTITIONS {
                list.add_partition_offset(t, p, Offset::Beginning).unwrap();
            }
        }
        consumer.assign(&list).unwrap();
        let mut next: HashMap<(String, i32), i64> = HashMap::new();
        let mut back = ReadBack::default();
        let mut targets: Option<Vec<((String, i32), i64)>> = None;
        let mut drain_deadline = None;
        loop {
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    let k = (m.topic().to_string(), m.partition());
                    let expected = next.get(&k).copied().unwrap_or(0);
                    if m.offset() < expected {
                        continue;
                    }
                    back.gaps += m.offset() - expected;
                    next.insert(k, m.offset() + 1);
                    let value = m.payload().unwrap_or_default();
                    back.messages += 1;
                    back.bytes += value.len() as u64;
                    let id = event_id(m.topic().as_bytes(), m.key(), value);
                    *back.seen.entry(id).or_default() += 1;
                    if DESCRIBE.load(Ordering::Relaxed) {
                        let key = m.key().map(|k| show(k, 80));
                        let text = format!("{} key {key:?} value {}", m.topic(), show(value, 300));
                        back.described.insert(id, (text, show(value, 60)));
                    }
                }
                Some(Err(e)) => {
                    back.errors += 1;
                    back.first_error.get_or_insert_with(|| e.to_string());
                }
                None => {}
            }
            if !stop.load(Ordering::Relaxed) {
                continue;
            }
            let targets = targets.get_or_insert_with(|| {
                drain_deadline = Some(Instant::now() + Duration::from_secs(120));
                let mut t = Vec::new();
                for topic in TOPICS {
                    for p in 0..PARTITIONS {
                        let (_, high) = consumer
                            .fetch_watermarks(topic, p, Duration::from_secs(10))
                            .unwrap();
                        t.push(((topic.to_string(), p), high));
                    }
                }
                t
            });
            if targets
                .iter()
                .all(|(k, high)| next.get(k).copied().unwrap_or(0) >= *high)
            {
                back.drained = true;
                return back;
            }
            if drain_deadline.is_some_and(|d| Instant::now() > d) {
                return back;
            }
        }
    })
}

/// VmRSS of a process, in kB.
fn rss_kb(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

/// TCP sockets from or to 127.0.0.1:`ports`, from /proc/net/tcp: (established, close-wait,
/// any other state but LISTEN and TIME_WAIT).
fn sockets(ports: &[u16]) -> (usize, usize, usize) {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let port_of = |addr: &str| {
        addr.split_once(':')
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
    };
    let mut counts = (0, 0, 0);
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 4 {
            continue;
        }
        let ours = [f[1], f[2]]
            .iter()
            .any(|a| port_of(a).is_some_and(|p| ports.contains(&p)));
        if !ours {
            continue;
        }
        match f[3] {
            "01" => counts.0 += 1,
            "08" => counts.1 += 1,
            "0A" | "06" => {}
            _ => counts.2 += 1,
        }
    }
    counts
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v}: not a number")),
    )
}

// ---------------------------------------------------------------------------------------
// The run

#[test]
fn http_fuzz() {
    let requests = env_u64("HTTP_FUZZ_REQUESTS").unwrap_or(DEFAULT_REQUESTS);
    let seed = match env_u64("HTTP_FUZZ_SEED").unwrap_or(20261123) {
        0 => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
        seed => seed,
    };
    println!(
        "http_fuzz: seed {seed}, {requests} requests \
         (HTTP_FUZZ_SEED={seed} HTTP_FUZZ_REQUESTS={requests} to repeat)"
    );
    DESCRIBE.store(env_u64("HTTP_FUZZ_DESCRIBE") == Some(1), Ordering::Relaxed);
    let started = Instant::now();

    let cluster = MockCluster::new(1).unwrap();
    for t in TOPICS {
        cluster.create_topic(t, PARTITIONS, 1).unwrap();
    }
    let brokers = cluster.bootstrap_servers();
    let h2_port = free_port();
    let level = std::env::var("HTTP_FUZZ_LOG_LEVEL").unwrap_or_else(|_| "notice".into());
    let conf = nginx_conf(h2_port, &level);
    let mut nginx = Nginx::start(
        &[("nginx.conf", &conf), ("fuzz-locations.conf", LOCATIONS)],
        &brokers,
    );
    println!("http_fuzz: nginx in {}", nginx.prefix.0.display());
    let ports = Ports {
        h1: nginx.port,
        h2: h2_port,
    };
    let mut workers = nginx.workers();
    workers.sort_unstable();
    assert_eq!(workers.len(), 2, "two workers");

    let stop_reader = Arc::new(AtomicBool::new(false));
    let reader = spawn_reader(brokers.clone(), stop_reader.clone());

    // Every loop below is bounded by its count and by this deadline (500 requests/s at
    // least; the run itself goes at thousands).
    let deadline = started + Duration::from_secs(120 + requests / 500);
    let progress = Arc::new(AtomicU64::new(0));
    let clients: Vec<JoinHandle<Tally>> = (0..THREADS)
        .map(|i| {
            let quota = requests / THREADS + u64::from(i < requests % THREADS);
            let progress = progress.clone();
            let client = Client {
                rng: Rng::new(seed ^ (i + 1).wrapping_mul(0xd6e8_feb8_6659_fd93)),
                ports,
                tally: Tally::default(),
                parked: VecDeque::new(),
                session: String::new(),
            };
            std::thread::spawn(move || client.run(quota, deadline, &progress))
        })
        .collect();

    // Worker memory after a warm-up (a tenth of the run), and at the end.
    let warm_up = (requests / 10).max(1000).min(requests);
    let mut rss_warm: Option<Vec<u64>> = None;
    let mut last_report = Instant::now();
    while clients.iter().any(|c| !c.is_finished()) {
        std::thread::sleep(Duration::from_millis(100));
        let done = progress.load(Ordering::Relaxed);
        if rss_warm.is_none() && done >= warm_up {
            rss_warm = Some(workers.iter().map(|&p| rss_kb(p)).collect());
        }
        if last_report.elapsed() > Duration::from_secs(15) {
            last_report = Instant::now();
            eprintln!(
                "http_fuzz: {done} requests after {:.0} s",
                started.elapsed().as_secs_f64()
            );
        }
    }
    let mut tally = Tally::default();
    for c in clients {
        tally.merge(c.join().unwrap());
    }
    let elapsed = started.elapsed();

    // Every client socket is closed: nginx must have closed its side too.
    let conn_deadline = Instant::now() + Duration::from_secs(15);
    let mut conns = sockets(&[ports.h1, ports.h2]);
    while (conns.0, conns.1) != (0, 0) && Instant::now() < conn_deadline {
        std::thread::sleep(Duration::from_millis(100));
        conns = sockets(&[ports.h1, ports.h2]);
    }
    let rss_warm = rss_warm.unwrap_or_default();
    let rss_end: Vec<u64> = workers.iter().map(|&p| rss_kb(p)).collect();
    let mut workers_now = nginx.workers();
    workers_now.sort_unstable();

    // QUIT flushes every producer; then Kafka holds all it will ever hold.
    nginx.quit();
    let log = nginx.log("error.log");
    let (delivered_by_nginx, failed_by_nginx) = exit_counts(&log);
    stop_reader.store(true, Ordering::Relaxed);
    let back = reader.join().unwrap();

    let (mut missing, mut duplicated, mut unexpected, mut delivered) = (0u64, 0u64, 0u64, 0u64);
    let mut unknown_delivered = 0u64;
    for (id, &acc) in &tally.accepted {
        let got = back.seen.get(id).copied().unwrap_or(0);
        let unk = tally.unknown.get(id).copied().unwrap_or(0);
        delivered += u64::from(got.min(acc));
        missing += u64::from(acc.saturating_sub(got));
        duplicated += u64::from(got.saturating_sub(acc + unk));
    }
    for (id, &got) in &back.seen {
        if tally.accepted.contains_key(id) {
            continue;
        }
        let unk = tally.unknown.get(id).copied().unwrap_or(0);
        unknown_delivered += u64::from(got.min(unk));
        unexpected += u64::from(got.saturating_sub(unk));
    }
    let answered_2xx: u64 = tally.accepted.values().map(|&n| u64::from(n)).sum();

    println!(
        "http_fuzz: {:.1} s; slowest answer {} ms ({}); sessions {:?}; \
         {} unanswered (connection ended first), \
         {} of their events in Kafka; Kafka: {} messages, {} bytes, {} offsets skipped, \
         {} consumer errors {:?}, drained {}; nginx's exit counts: {} delivered, {} not",
        elapsed.as_secs_f64(),
        tally.slowest.as_millis(),
        tally.slowest_case,
        tally.sessions,
        tally.unanswered,
        unknown_delivered,
        back.messages,
        back.bytes,
        back.gaps,
        back.errors,
        back.first_error,
        back.drained,
        delivered_by_nginx,
        failed_by_nginx,
    );
    println!(
        "http_fuzz: seed {seed}, {} requests (h1 {}, h2 {}), 2xx {answered_2xx}, \
         delivered {delivered}, missing {missing}, duplicated {duplicated}, \
         unexpected {unexpected}, statuses {:?}, worker RSS {}→{} kB, connections {} \
         ({} closing)",
        tally.h1 + tally.h2,
        tally.h1,
        tally.h2,
        tally.statuses,
        rss_warm.iter().sum::<u64>(),
        rss_end.iter().sum::<u64>(),
        conns.0 + conns.1,
        conns.2,
    );
    if DESCRIBE.load(Ordering::Relaxed) {
        let mut shown = 0;
        for (id, &acc) in &tally.accepted {
            if back.seen.get(id).copied().unwrap_or(0) < acc && shown < 8 {
                shown += 1;
                println!("http_fuzz: MISSING {:?}", tally.described.get(id));
            }
        }
        shown = 0;
        for (id, &got) in &back.seen {
            let expected = tally.accepted.get(id).copied().unwrap_or(0)
                + tally.unknown.get(id).copied().unwrap_or(0);
            if got > expected && shown < 8 {
                shown += 1;
                let (message, value) = &back.described[id];
                println!("http_fuzz: UNEXPECTED {message}");
                println!("    requests: {:?}", tally.described.get(id));
                let hits = tally.journal.iter().filter(|j| j.contains(value.as_str()));
                for hit in hits.take(5) {
                    let session = hit.split(' ').next().unwrap_or_default();
                    println!("    has its bytes, in session {session}:");
                    for j in tally.journal.iter().filter(|j| j.starts_with(session)) {
                        println!("        {j}");
                    }
                }
            }
        }
    }
    let spilled = log
        .matches("a client request body is buffered to a temporary file")
        .count();
    println!(
        "http_fuzz: covered {:?}, bodies in temporary files {spilled}",
        tally.covered
    );
    for (kind, (n, cases)) in &tally.findings {
        println!("http_fuzz: FINDING {kind}: {n}");
        for c in cases {
            println!("    {c}");
        }
    }

    assert!(
        tally.findings.is_empty(),
        "seed {seed}: findings: {:?}",
        tally.findings.keys().collect::<Vec<_>>()
    );
    assert!(
        tally.h1 + tally.h2 >= requests,
        "seed {seed}: only {} of {requests} requests sent before the deadline",
        tally.h1 + tally.h2
    );
    assert_eq!(workers_now, workers, "seed {seed}: a worker died");
    // nginx holding a connection shows as ESTABLISHED or CLOSE_WAIT; other states (FIN_WAIT,
    // LAST_ACK, SYN_RECV) are sockets already closed that the kernel is finishing with.
    assert_eq!(
        (conns.0, conns.1),
        (0, 0),
        "seed {seed}: sockets left (established, close-wait), {} closing",
        conns.2
    );
    for (i, (&warm, &end)) in rss_warm.iter().zip(&rss_end).enumerate() {
        assert!(
            end <= warm + RSS_GROWTH_LIMIT_KB,
            "seed {seed}: worker {i} grew from {warm} to {end} kB"
        );
    }
    assert_eq!(
        back.gaps, 0,
        "the mock broker dropped messages before they were read"
    );
    assert!(back.drained, "Kafka was not read to its end");
    assert_eq!(
        (missing, duplicated, unexpected),
        (0, 0, 0),
        "seed {seed}: events answered 2xx must be in Kafka exactly once, and nothing else"
    );
    assert_eq!(
        failed_by_nginx, 0,
        "seed {seed}: nginx logged undelivered events"
    );
    assert!(answered_2xx > requests / 2, "most requests are accepted");
}
