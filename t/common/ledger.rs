//! A ledger of events: a load generator that posts numbered events and writes down what each
//! request was answered, a reader that takes a topic back from the beginning, and a report
//! of what became of every event answered 2xx (delivered, duplicated, logged, missing).
//!
//! Every event is a JSON object with a unique id (`{"id":"<run>-<n>",...}`), raw control
//! bytes as JSON whitespace, escapes and non-ASCII text, so that comparing a delivered value
//! with the body sent for its id byte for byte means something. An event counts as accepted
//! only if it was answered 2xx: a refusal, a connection error or a lost response is not an
//! acceptance, and nothing is retried.
//!
//! Also here: a tansu broker whose storage survives its own SIGKILL (tansu's S3 engine on
//! a local moto server), for scenarios that kill the broker.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use super::{free_port, undelivered_payloads, TempDir};

/// The body of event `n` of run `run`, and its id. `pad_max` bounds the padding, which
/// varies with `n` so that sizes differ.
pub fn event(run: &str, n: usize, pad_max: usize) -> (String, Vec<u8>) {
    let id = format!("{run}-{n}");
    let pad_len = if pad_max == 0 {
        0
    } else {
        (n * 37) % (pad_max + 1)
    };
    let pad: String = "abcdefghij-0123456789_"
        .chars()
        .cycle()
        .take(pad_len)
        .collect();
    // Raw CR, LF and TAB between members (JSON whitespace, escaped in a failure line),
    // JSON escapes, and UTF-8 text of two, three and four bytes.
    let body = format!(
        "{{\"id\":\"{id}\",\r\n\t\"n\":{n},\"text\":\"caf\u{e9} \u{4e8b}\u{4ef6} \u{1f4e6} \
         \\\"q\\\" \\\\ \\u00e9\\n\",\"pad\":\"{pad}\"}}"
    );
    (id, body.into_bytes())
}

/// The id of an event body, if it is one of ours.
pub fn id_of(value: &[u8]) -> Option<String> {
    let start = find(value, b"{\"id\":\"")? + 7;
    let len = value[start..].iter().position(|&b| b == b'"')?;
    std::str::from_utf8(&value[start..start + len])
        .ok()
        .map(str::to_string)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// What one request got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Answered 2xx: the event is the server's.
    Accepted(u16),
    /// Answered anything else; the `error` of the JSON body when there is one.
    Refused(u16, String),
    /// No answer: the connection failed, closed or timed out.
    NoAnswer(String),
}

/// Every event sent, what it was answered, and what was found of it.
#[derive(Default)]
pub struct Ledger {
    /// id → body sent.
    pub sent: BTreeMap<String, Vec<u8>>,
    /// id → outcome of its request.
    pub outcome: HashMap<String, Outcome>,
    /// id → bodies found in an error log's failure lines.
    pub logged: HashMap<String, Vec<Vec<u8>>>,
    /// id → values read back from the brokers.
    pub found: HashMap<String, Vec<Vec<u8>>>,
    /// Values read back that carry no id of ours.
    pub foreign: usize,
    /// Accepted ids that the scenario itself destroyed (a record cut on purpose), with why.
    pub excluded: BTreeMap<String, String>,
}

impl Ledger {
    fn record(&mut self, id: String, body: Vec<u8>, outcome: Outcome) {
        self.outcome.insert(id.clone(), outcome);
        self.sent.insert(id, body);
    }

    /// Adds another run's ledger (ids are unique per run tag).
    pub fn merge(&mut self, other: Ledger) {
        self.sent.extend(other.sent);
        self.outcome.extend(other.outcome);
        for (id, v) in other.logged {
            self.logged.entry(id).or_default().extend(v);
        }
    }

    pub fn accepted_ids(&self) -> BTreeSet<String> {
        self.outcome
            .iter()
            .filter(|(_, o)| matches!(o, Outcome::Accepted(_)))
            .map(|(id, _)| id.clone())
            .collect()
    }

    pub fn accepted(&self) -> usize {
        self.accepted_ids().len()
    }

    /// Refusals by `status error`.
    pub fn refusals(&self) -> BTreeMap<String, usize> {
        let mut by = BTreeMap::new();
        for o in self.outcome.values() {
            if let Outcome::Refused(status, error) = o {
                *by.entry(format!("{status} {error}").trim().to_string())
                    .or_default() += 1;
            }
        }
        by
    }

    pub fn refused(&self) -> usize {
        self.refusals().values().sum()
    }

    pub fn no_answer(&self) -> usize {
        self.outcome
            .values()
            .filter(|o| matches!(o, Outcome::NoAnswer(_)))
            .count()
    }

    /// Marks an accepted event as destroyed by the scenario: not counted as missing.
    pub fn exclude(&mut self, id: &str, why: &str) {
        self.excluded.insert(id.to_string(), why.to_string());
    }

    /// Takes the `message not delivered` lines of an error log as a source: an event found
    /// there, byte for byte, is "logged" rather than missing. Returns how many lines held
    /// one of our ids.
    pub fn recover_from_log(&mut self, log: &str) -> usize {
        let mut n = 0;
        for payload in undelivered_payloads(log) {
            if let Some(id) = id_of(&payload) {
                self.logged.entry(id).or_default().push(payload);
                n += 1;
            }
        }
        n
    }

    /// Accepted ids not accounted for yet by the error log (what the reader waits for).
    fn wanted(&self) -> BTreeSet<String> {
        self.accepted_ids()
            .into_iter()
            .filter(|id| !self.excluded.contains_key(id) && !self.is_logged(id))
            .collect()
    }

    fn is_logged(&self, id: &str) -> bool {
        let sent = self.sent.get(id);
        self.logged
            .get(id)
            .is_some_and(|copies| copies.iter().any(|c| Some(c) == sent))
    }

    /// Reads `topics` from the beginning of every partition, from `brokers`, until every
    /// accepted id (not logged, not excluded) was seen, then a second more for extra
    /// copies; or until nothing arrived for `idle`; at most `cap` in all. What it read
    /// replaces what an earlier read found.
    pub fn read_back(&mut self, brokers: &str, topics: &[&str], idle: Duration, cap: Duration) {
        let wanted = self.wanted();
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set(
                "group.id",
                format!("ledger-{}-{}", std::process::id(), free_port()),
            )
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", "100")
            .create()
            .expect("a consumer");
        let started = Instant::now();
        let mut list = TopicPartitionList::new();
        for topic in topics {
            // A broker that has just come back may not list the topic yet.
            let deadline = Instant::now() + Duration::from_secs(20);
            let partitions = loop {
                let n = consumer
                    .fetch_metadata(Some(topic), Duration::from_secs(5))
                    .ok()
                    .and_then(|md| {
                        md.topics()
                            .iter()
                            .find(|t| t.name() == *topic && t.error().is_none())
                            .map(|t| t.partitions().iter().map(|p| p.id()).collect::<Vec<_>>())
                    })
                    .unwrap_or_default();
                if !n.is_empty() {
                    break n;
                }
                assert!(
                    Instant::now() < deadline,
                    "topic {topic} has no partitions on {brokers}"
                );
                thread::sleep(Duration::from_millis(200));
            };
            for p in partitions {
                list.add_partition_offset(topic, p, Offset::Beginning)
                    .unwrap();
            }
        }
        consumer.assign(&list).expect("assign");

        self.found.clear();
        self.foreign = 0;
        let mut seen = BTreeSet::new();
        let mut last = Instant::now();
        let mut complete_at: Option<Instant> = None;
        loop {
            let now = Instant::now();
            if complete_at.is_some_and(|t| now.duration_since(t) > Duration::from_secs(1))
                || now.duration_since(last) > idle
                || now.duration_since(started) > cap
            {
                break;
            }
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    last = Instant::now();
                    let value = m.payload().unwrap_or_default().to_vec();
                    match id_of(&value) {
                        Some(id) => {
                            if wanted.contains(&id) {
                                seen.insert(id.clone());
                            }
                            self.found.entry(id).or_default().push(value);
                        }
                        None => self.foreign += 1,
                    }
                    if complete_at.is_none() && seen.len() == wanted.len() {
                        complete_at = Some(Instant::now());
                    }
                }
                Some(Err(_)) | None => {
                    if complete_at.is_none() && seen.len() == wanted.len() {
                        complete_at = Some(Instant::now());
                    }
                }
            }
        }
    }

    /// What became of every accepted event.
    pub fn report(&self, scenario: &str) -> Report {
        let accepted = self.accepted_ids();
        let mut r = Report {
            scenario: scenario.to_string(),
            sent: self.sent.len(),
            accepted: accepted.len(),
            refusals: self.refusals(),
            no_answer: self.no_answer(),
            excluded: self.excluded.len(),
            foreign: self.foreign,
            ..Report::default()
        };
        r.refused = r.refusals.values().sum();
        for id in &accepted {
            let sent = &self.sent[id];
            let copies = self.found.get(id).map(Vec::as_slice).unwrap_or_default();
            r.duplicated += copies.len().saturating_sub(1);
            if copies.iter().any(|c| c == sent) {
                r.delivered += 1;
                if copies.iter().any(|c| c != sent) {
                    r.mismatched.push(id.clone());
                }
            } else if !copies.is_empty() {
                r.mismatched.push(id.clone());
            } else if self.is_logged(id) {
                r.logged += 1;
            } else if self.excluded.contains_key(id) {
                // Destroyed on purpose; counted in `excluded`.
            } else {
                r.missing.push(id.clone());
            }
        }
        for (id, copies) in &self.found {
            if !accepted.contains(id) {
                r.unexpected += copies.len();
            }
        }
        r
    }
}

/// The figures of one scenario.
#[derive(Debug, Default)]
pub struct Report {
    pub scenario: String,
    pub sent: usize,
    pub accepted: usize,
    /// Accepted and read back, byte-equal to what was sent.
    pub delivered: usize,
    /// Accepted, not read back, but in an error log's failure lines, byte-equal.
    pub logged: usize,
    /// Extra copies of accepted events.
    pub duplicated: usize,
    /// Accepted and found nowhere.
    pub missing: Vec<String>,
    /// Accepted ids read back with other bytes than were sent.
    pub mismatched: Vec<String>,
    /// Copies of ids that were never accepted (a request whose answer was lost, a 503
    /// `ack_timeout` delivered later): reported, not a failure.
    pub unexpected: usize,
    pub refused: usize,
    pub refusals: BTreeMap<String, usize>,
    pub no_answer: usize,
    pub excluded: usize,
    pub foreign: usize,
}

impl Report {
    /// One line, for the closing note.
    pub fn line(&self) -> String {
        let refusals: Vec<String> = self
            .refusals
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        let mut line = format!(
            "ledger {}: accepted={} delivered={} duplicated={} missing={} refused={}",
            self.scenario,
            self.accepted,
            self.delivered,
            self.duplicated,
            self.missing.len(),
            self.refused
        );
        if !refusals.is_empty() {
            line.push_str(&format!(" ({})", refusals.join(", ")));
        }
        line.push_str(&format!(
            " logged={} no_answer={} unexpected={} mismatched={} sent={}",
            self.logged,
            self.no_answer,
            self.unexpected,
            self.mismatched.len(),
            self.sent
        ));
        if self.excluded > 0 {
            line.push_str(&format!(" excluded={}", self.excluded));
        }
        if self.foreign > 0 {
            line.push_str(&format!(" foreign={}", self.foreign));
        }
        line
    }

    pub fn print(&self) -> &Self {
        println!("{}", self.line());
        self
    }

    /// Fails, listing the first 20, if an accepted event is missing or came back with other
    /// bytes than were sent.
    pub fn assert_missing_zero(&self) {
        assert!(
            self.missing.is_empty() && self.mismatched.is_empty(),
            "{}\nmissing (first 20): {:?}\nmismatched (first 20): {:?}",
            self.line(),
            &self.missing[..self.missing.len().min(20)],
            &self.mismatched[..self.mismatched.len().min(20)]
        );
    }
}

/// How to load one endpoint.
#[derive(Clone)]
pub struct Load {
    pub port: u16,
    pub path: String,
    pub headers: Vec<(String, String)>,
    /// Client threads, each on its own keep-alive connection (reconnecting when it closes).
    pub clients: usize,
    /// At most this many events in all.
    pub max_events: usize,
    /// Events per second over all clients; `None`: as fast as answers come.
    pub rate: Option<f64>,
    /// Longest padding of a body (bodies vary from 0 to this).
    pub pad_max: usize,
    /// How long one request may wait for its answer.
    pub timeout: Duration,
    /// The load stops after this long whatever happens.
    pub max_duration: Duration,
}

impl Load {
    pub fn new(port: u16, path: &str) -> Load {
        Load {
            port,
            path: path.to_string(),
            headers: Vec::new(),
            clients: 4,
            max_events: 5_000,
            rate: Some(200.0),
            pad_max: 200,
            timeout: Duration::from_secs(20),
            max_duration: Duration::from_secs(90),
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Load {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn clients(mut self, n: usize) -> Load {
        self.clients = n;
        self
    }

    pub fn max_events(mut self, n: usize) -> Load {
        self.max_events = n;
        self
    }

    pub fn rate(mut self, per_second: Option<f64>) -> Load {
        self.rate = per_second;
        self
    }

    pub fn pad_max(mut self, n: usize) -> Load {
        self.pad_max = n;
        self
    }

    /// Starts the clients; events are numbered `run-0`, `run-1`, ... in the order they are
    /// taken, whichever client takes them.
    pub fn start(&self, run: &str) -> Running {
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            next: AtomicUsize::new(0),
            answered: AtomicUsize::new(0),
            accepted: AtomicUsize::new(0),
            refused: AtomicUsize::new(0),
            ledger: Mutex::new(Ledger::default()),
        });
        let started = Instant::now();
        let clients = (0..self.clients)
            .map(|_| {
                let (load, shared, run) = (self.clone(), shared.clone(), run.to_string());
                thread::spawn(move || client(&load, &shared, &run, started))
            })
            .collect();
        Running { shared, clients }
    }
}

struct Shared {
    stop: AtomicBool,
    next: AtomicUsize,
    answered: AtomicUsize,
    accepted: AtomicUsize,
    refused: AtomicUsize,
    ledger: Mutex<Ledger>,
}

/// A load being generated.
pub struct Running {
    shared: Arc<Shared>,
    clients: Vec<JoinHandle<()>>,
}

impl Running {
    /// Requests answered (any status), accepted (2xx), refused (other statuses).
    pub fn counts(&self) -> (usize, usize, usize) {
        (
            self.shared.answered.load(Ordering::Relaxed),
            self.shared.accepted.load(Ordering::Relaxed),
            self.shared.refused.load(Ordering::Relaxed),
        )
    }

    /// Events taken by clients so far (answered or not).
    pub fn taken(&self) -> usize {
        self.shared.next.load(Ordering::Relaxed)
    }

    pub fn finished(&self) -> bool {
        self.clients.iter().all(JoinHandle::is_finished)
    }

    /// Waits until `done(answered, accepted, refused)` holds, the load ends, or `timeout`
    /// passes; says whether it held.
    pub fn wait_for(
        &self,
        timeout: Duration,
        mut done: impl FnMut(usize, usize, usize) -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let (a, ok, r) = self.counts();
            if done(a, ok, r) {
                return true;
            }
            if Instant::now() > deadline || self.finished() {
                return false;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the clients (each finishes the request it is in) and returns the ledger.
    pub fn stop(self) -> Ledger {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.join()
    }

    /// Waits for the clients to run out of events (`max_events` or `max_duration`).
    pub fn join(self) -> Ledger {
        for c in self.clients {
            c.join().expect("a load client panicked");
        }
        std::mem::take(&mut *self.shared.ledger.lock().unwrap())
    }
}

fn client(load: &Load, shared: &Shared, run: &str, started: Instant) {
    let mut conn: Option<Conn> = None;
    loop {
        if shared.stop.load(Ordering::Relaxed) || started.elapsed() > load.max_duration {
            return;
        }
        let n = shared.next.fetch_add(1, Ordering::Relaxed);
        if n >= load.max_events {
            return;
        }
        if let Some(rate) = load.rate {
            let due = started + Duration::from_secs_f64(n as f64 / rate);
            while Instant::now() < due {
                if shared.stop.load(Ordering::Relaxed) {
                    return;
                }
                thread::sleep((due - Instant::now()).min(Duration::from_millis(50)));
            }
        }
        let (id, body) = event(run, n, load.pad_max);
        let outcome = match post(&mut conn, load, &body) {
            Ok((status, text)) if (200..300).contains(&status) => {
                shared.answered.fetch_add(1, Ordering::Relaxed);
                shared.accepted.fetch_add(1, Ordering::Relaxed);
                let _ = text;
                Outcome::Accepted(status)
            }
            Ok((status, text)) => {
                shared.answered.fetch_add(1, Ordering::Relaxed);
                shared.refused.fetch_add(1, Ordering::Relaxed);
                Outcome::Refused(status, error_code(&text))
            }
            Err(e) => {
                conn = None;
                // nginx going away or not there yet: do not spin.
                thread::sleep(Duration::from_millis(20));
                Outcome::NoAnswer(e)
            }
        };
        shared.ledger.lock().unwrap().record(id, body, outcome);
    }
}

/// The `error` of a JSON error body, or "".
pub fn error_code(body: &str) -> String {
    body.split_once("\"error\":\"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(code, _)| code.to_string())
        .unwrap_or_default()
}

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// One POST on the client's connection (opened if there is none): (status, body), or why
/// there was no answer. A response with `Connection: close` drops the connection.
fn post(conn: &mut Option<Conn>, load: &Load, body: &[u8]) -> Result<(u16, String), String> {
    if conn.is_none() {
        let stream = TcpStream::connect(("127.0.0.1", load.port)).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(load.timeout))
            .map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        *conn = Some(Conn {
            stream,
            buf: Vec::new(),
        });
    }
    let c = conn.as_mut().unwrap();
    let mut req = format!(
        "POST {} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n",
        load.path
    );
    for (k, v) in &load.headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    c.stream
        .write_all(&bytes)
        .map_err(|e| format!("write: {e}"))?;
    let (status, close, text) = read_response(c)?;
    if close {
        *conn = None;
    }
    Ok((status, text))
}

fn read_response(c: &mut Conn) -> Result<(u16, bool, String), String> {
    let fill = |c: &mut Conn| -> Result<(), String> {
        let mut chunk = [0u8; 16384];
        match c.stream.read(&mut chunk) {
            Ok(0) => Err("closed".to_string()),
            Ok(n) => {
                c.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Err(e) => Err(format!("read: {e}")),
        }
    };
    let head_end = loop {
        if let Some(i) = find(&c.buf, b"\r\n\r\n") {
            break i;
        }
        fill(c)?;
    };
    let head = String::from_utf8_lossy(&c.buf[..head_end]).into_owned();
    c.buf.drain(..head_end + 4);
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line: {head:?}"))?;
    let mut length = None;
    let mut close = false;
    let mut chunked = false;
    for line in lines {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_ascii_lowercase());
        match k.as_str() {
            "content-length" => length = v.parse::<usize>().ok(),
            "connection" if v == "close" => close = true,
            "transfer-encoding" if v.contains("chunked") => chunked = true,
            _ => {}
        }
    }
    let body = if chunked {
        // Not sent by the module; read it whole to keep the connection in step.
        let mut out = Vec::new();
        loop {
            let eol = loop {
                if let Some(i) = find(&c.buf, b"\r\n") {
                    break i;
                }
                fill(c)?;
            };
            let size = usize::from_str_radix(
                String::from_utf8_lossy(&c.buf[..eol])
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim(),
                16,
            )
            .map_err(|e| format!("chunk size: {e}"))?;
            c.buf.drain(..eol + 2);
            while c.buf.len() < size + 2 {
                fill(c)?;
            }
            out.extend(c.buf.drain(..size));
            c.buf.drain(..2);
            if size == 0 {
                break out;
            }
        }
    } else {
        let len = match length {
            Some(n) => n,
            None if status == 204 || status == 304 || (100..200).contains(&status) => 0,
            None => {
                while fill(c).is_ok() {}
                close = true;
                c.buf.len()
            }
        };
        while c.buf.len() < len {
            fill(c)?;
        }
        c.buf.drain(..len).collect()
    };
    Ok((status, close, String::from_utf8_lossy(&body).into_owned()))
}

/// A local S3 server (moto's `moto_server`: `MOTO_SERVER`, or on PATH), our child, on a
/// free port; killed (that pid only) when dropped.
pub struct Moto {
    child: Child,
    pub port: u16,
    dir: TempDir,
}

impl Moto {
    pub fn start() -> Moto {
        let bin = std::env::var_os("MOTO_SERVER")
            .map(PathBuf::from)
            .or_else(|| on_path("moto_server"))
            .expect("moto_server is not installed (pip install 'moto[server]')");
        let dir = TempDir::new("moto");
        let port = free_port();
        let log = fs::File::create(dir.0.join("moto.log")).unwrap();
        let child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("moto_server starts");
        let mut moto = Moto { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = moto.child.try_wait().unwrap() {
                panic!("moto_server exited at start ({status}):\n{}", moto.log());
            }
            assert!(Instant::now() < deadline, "moto_server does not listen");
            thread::sleep(Duration::from_millis(50));
        }
        moto
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.0.join("moto.log")).unwrap_or_default()
    }

    /// Creates a bucket (`PUT /name`).
    pub fn create_bucket(&self, name: &str) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let req = format!(
            "PUT /{name} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        );
        s.write_all(req.as_bytes()).unwrap();
        let mut resp = String::new();
        let _ = s.read_to_string(&mut resp);
        assert!(
            resp.starts_with("HTTP/1.1 200"),
            "moto: create bucket {name}: {resp}"
        );
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The tansu binary: `TANSU_BIN`, `tansu` on PATH, or ~/.cargo/bin/tansu.
pub fn tansu_binary() -> PathBuf {
    std::env::var_os("TANSU_BIN")
        .map(PathBuf::from)
        .or_else(|| on_path("tansu"))
        .or_else(|| {
            let bin = PathBuf::from(std::env::var_os("HOME")?).join(".cargo/bin/tansu");
            bin.is_file().then_some(bin)
        })
        .expect("tansu is not installed (make test installs it: cargo install tansu@0.6.0)")
}

/// A tansu broker keeping its data in a bucket of a local S3 server, so that it can be
/// SIGKILLed and started again on the same port with its topics and messages.
pub struct DurableTansu {
    child: Option<Child>,
    pub port: u16,
    moto_port: u16,
    bucket: String,
    dir: TempDir,
    starts: usize,
}

impl DurableTansu {
    pub fn start(moto: &Moto, bucket: &str) -> DurableTansu {
        moto.create_bucket(bucket);
        let mut t = DurableTansu {
            child: None,
            port: free_port(),
            moto_port: moto.port,
            bucket: bucket.to_string(),
            dir: TempDir::new("tansu-s3"),
            starts: 0,
        };
        t.launch();
        t
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(tansu_binary());
        c.args(args)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env(
                "AWS_ENDPOINT",
                format!("http://127.0.0.1:{}", self.moto_port),
            )
            .env("AWS_ALLOW_HTTP", "true")
            .stdin(Stdio::null());
        c
    }

    fn launch(&mut self) {
        self.starts += 1;
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let log = fs::File::create(self.dir.0.join(format!("tansu-{}.log", self.starts))).unwrap();
        let child = self
            .command(&[
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                &format!("s3://{}/", self.bucket),
                "--cluster-id",
                "nginx-kafka-ledger",
            ])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("tansu starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("tansu exited at start ({status}):\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "tansu does not listen");
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        let mut all = String::new();
        for n in 1..=self.starts {
            all.push_str(
                &fs::read_to_string(self.dir.0.join(format!("tansu-{n}.log"))).unwrap_or_default(),
            );
        }
        all
    }

    /// SIGKILL (our child, by pid), and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again, on the same port and bucket.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    /// `tansu topic create`, then waits until metadata lists every partition.
    pub fn create_topic(&self, name: &str, partitions: i32) {
        let out = self
            .command(&[
                "topic",
                "create",
                name,
                "--partitions",
                &partitions.to_string(),
                "--broker",
                &format!("tcp://127.0.0.1:{}", self.port),
            ])
            .output()
            .expect("tansu topic create runs");
        assert!(
            out.status.success(),
            "tansu topic create {name}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        super::wait_for_topic(&self.brokers(), name, partitions, String::new);
    }
}

impl Drop for DurableTansu {
    fn drop(&mut self) {
        self.kill();
        if thread::panicking() {
            eprintln!("--- tansu log ---\n{}", self.log());
        }
    }
}

/// Sends `sig` to a process of ours (an nginx worker, say), by pid.
pub fn signal_pid(pid: i32, sig: i32) {
    // SAFETY: kill(2) on a pid this test started (directly or as nginx's child).
    unsafe { libc::kill(pid, sig) };
}

/// Whether a process is gone (no /proc entry, or a zombie).
pub fn gone(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, after)| after.starts_with('Z') || after.starts_with('X')),
    }
}

/// The real uid of a process, from /proc.
pub fn uid_of(pid: i32) -> Option<u32> {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find(|l| l.starts_with("Uid:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
