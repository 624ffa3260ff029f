//! Reads, exports and replays spool directories (docs/spool-format.md), and replays the
//! error log's `message not delivered` lines. `kafka-spool --help` says how.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{
    BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext, PurgeConfig,
};
use rdkafka::{ClientConfig, ClientContext};
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

// The module's pure code, compiled in from its files: linking the module's library would
// pull in objects that need nginx's own symbols, which only the nginx binary has.
#[allow(dead_code)]
#[path = "../escape.rs"]
mod escape;
#[cfg(test)]
#[path = "../failure_line.rs"]
mod failure_line;
#[allow(dead_code)]
#[path = "../spool/files.rs"]
mod files;
#[allow(dead_code)]
#[path = "../spool/format.rs"]
mod format;

use escape::{log_escape, log_unescape};
use files::{Kind, Name};
use format::{Item, Record};

const HELP: &str = "\
kafka-spool: reads, exports and replays the files of a kafka_spool directory.

Usage:
  kafka-spool inspect DIR [--json]
  kafka-spool export DIR [--dead]
  kafka-spool replay DIR --brokers LIST [-X prop=value]... [--keep] [--dead] [--rate N]
  kafka-spool replay-log FILE --brokers LIST [-X prop=value]... [--rate N]
  kafka-spool --help

inspect DIR [--json]
  One line per spool file, oldest first: name, kind (journal, spool, dead), bytes, good
  records, corrupt regions, torn tail bytes, oldest and newest event time, and whether a
  process holds its lock (a live nginx worker, or a replay); then totals, and records and
  bytes (framed, on disk) per topic and per reason. With --json, one JSON object instead:
  {\"dir\",\"files\":[{\"file\",\"kind\",\"bytes\",\"records\",\"record_bytes\",\"corrupt\",
  \"corrupt_bytes\",\"torn_bytes\",\"oldest\",\"newest\",\"locked\",\"error\"}],\"totals\":{..},
  \"topics\":[{\"topic\",\"records\",\"bytes\"}],\"reasons\":[{\"reason\",\"records\",\"bytes\"}]}.
  Times are Unix milliseconds in JSON (null: none known). A file whose header is not
  understood (another format version) is listed with its error and counted as unreadable.
  Testing the lock takes it for an instant; a file that cannot be opened for writing shows
  \"?\" (null in JSON).

export DIR [--dead]
  Every good record as one JSON line on stdout, oldest file first:
    {\"file\",\"offset\",\"topic\",\"key\",\"headers\":[[name,value],..],\"timestamp\",
     \"flags\":[..],\"reason\",\"value\"}
  Byte strings that are UTF-8 are JSON strings, others {\"base64\":\"..\"}; a missing key or
  a null header value is null; timestamp is Unix milliseconds (0: unknown); flags are
  \"possibly_delivered\" and \"replayed\". Journal and spool files; --dead adds the
  dead-letter files. Counts of files, records, corrupt regions and torn tails go to stderr.
  Files are read without taking their locks. Exit status 1 if a file could not be read.

replay DIR --brokers LIST [-X prop=value]... [--keep] [--dead] [--rate N]
  Produces the records of the journal and spool files (and the dead-letter files with
  --dead), oldest file first. Each file is taken with its lock first; files held by another
  process (live nginx workers hold their own) are skipped and reported. Every good record
  goes to its topic with its key, headers and original timestamp. When the delivery report
  of every record in a file is in, the file is removed if all of them were delivered
  (--keep: never removed); otherwise it is kept whole, and a later replay sends its records
  again (consumers may see duplicates). Corrupt regions and torn tails are skipped.
  The producer uses enable.idempotence=true, partitioner=murmur2_random and
  message.timeout.ms=30000 unless -X says otherwise; any librdkafka producer property can
  be set with -X. A record that is not acknowledged within message.timeout.ms fails, so a
  replay always ends. --rate N: at most N records a second.
  Prints a summary on stdout: {\"files\",\"records\",\"delivered\",\"failed\",\"corrupt\",
  \"torn\",\"skipped_locked\",\"unreadable\",\"removed\"}. Exit status 0 only if every record
  was delivered and no file had a corrupt region or an unknown header; 1 otherwise; 2 for
  a usage or setup error.

replay-log FILE --brokers LIST [-X prop=value]... [--rate N]
  Reads an nginx error log (FILE, or - for stdin) and produces the event of every
  `kafka: message not delivered: ` line: topic, key, headers and payload (partition and
  error are not used; the timestamp is the time of the replay). The line is read left to
  right, quoted values unescaped; a line whose `bytes=` is not the payload's length (cut
  short by nginx's or syslog's line limit) or that does not parse is reported on stderr as
  a bad line and not produced. Same producer settings as replay. Prints {\"lines\",
  \"bad_lines\",\"records\",\"delivered\",\"failed\"}; exit status 0 only if every line was
  read and delivered.
";

/// The mark of an undelivered event in the error log (src/failure_line.rs).
const FAILURE_MARK: &[u8] = b"kafka: message not delivered: ";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = args.first().map(String::as_str).unwrap_or_default();
    let rest = args.get(1..).unwrap_or_default();
    let code = match command {
        "inspect" => inspect(&Options::parse(rest, &["--json"])),
        "export" => export(&Options::parse(rest, &["--dead"])),
        "replay" => replay(&Options::parse(
            rest,
            &["--brokers", "-X", "--keep", "--dead", "--rate"],
        )),
        "replay-log" => replay_log(&Options::parse(rest, &["--brokers", "-X", "--rate"])),
        "--help" | "-h" | "help" => {
            print!("{HELP}");
            0
        }
        _ => usage(),
    };
    std::process::exit(code);
}

/// The command line after the subcommand: one path and the options the subcommand takes.
#[derive(Default)]
struct Options {
    path: PathBuf,
    json: bool,
    dead: bool,
    keep: bool,
    brokers: Option<String>,
    properties: Vec<(String, String)>,
    rate: Option<f64>,
}

impl Options {
    fn parse(args: &[String], allowed: &[&str]) -> Options {
        let mut options = Options::default();
        let mut path = None;
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            if arg == "--help" || arg == "-h" {
                print!("{HELP}");
                std::process::exit(0);
            }
            if !arg.starts_with('-') || arg == "-" {
                if path.replace(PathBuf::from(arg)).is_some() {
                    usage();
                }
                continue;
            }
            if !allowed.contains(&arg.as_str()) {
                die(&format!("unknown option {arg:?}; see kafka-spool --help"));
            }
            match arg.as_str() {
                "--json" => options.json = true,
                "--dead" => options.dead = true,
                "--keep" => options.keep = true,
                "--brokers" => {
                    options.brokers = Some(args.next().unwrap_or_else(|| usage()).clone())
                }
                "-X" => {
                    let property = args.next().unwrap_or_else(|| usage());
                    let Some((name, value)) = property.split_once('=') else {
                        die(&format!("-X {property:?}: expected prop=value"));
                    };
                    options
                        .properties
                        .push((name.to_string(), value.to_string()));
                }
                "--rate" => {
                    let value = args.next().unwrap_or_else(|| usage());
                    match value.parse::<f64>() {
                        Ok(rate) if rate > 0.0 && rate.is_finite() => options.rate = Some(rate),
                        _ => die(&format!("--rate {value:?}: expected records a second, > 0")),
                    }
                }
                _ => usage(),
            }
        }
        options.path = path.unwrap_or_else(|| usage());
        options
    }

    fn brokers(&self) -> &str {
        self.brokers
            .as_deref()
            .unwrap_or_else(|| die("--brokers is required"))
    }
}

fn usage() -> ! {
    eprint!(
        "{}",
        HELP.split("\n\n").take(2).collect::<Vec<_>>().join("\n\n")
    );
    eprintln!("\n\nkafka-spool --help tells more.");
    std::process::exit(2)
}

fn die(message: &str) -> ! {
    eprintln!("kafka-spool: {message}");
    std::process::exit(2)
}

// ---------------------------------------------------------------------------------------
// Reading spool files

/// The spool files of `dir`, oldest first, without dead-letter files unless `dead`.
fn spool_files(dir: &Path, dead: bool) -> Vec<(Name, u64)> {
    let mut listed = files::list(dir).unwrap_or_else(|e| die(&format!("{}: {e}", dir.display())));
    listed.retain(|(name, _)| dead || name.kind != Kind::Dead);
    listed
}

/// What one file holds.
#[derive(Default, Serialize)]
struct FileSummary {
    records: u64,
    record_bytes: u64,
    corrupt: u64,
    corrupt_bytes: u64,
    torn_bytes: u64,
    oldest: Option<i64>,
    newest: Option<i64>,
}

impl FileSummary {
    fn add(&mut self, item: &Item<'_>) {
        match item {
            Item::Record { len, record, .. } => {
                self.records += 1;
                self.record_bytes += *len as u64;
                if record.timestamp_ms != 0 {
                    let t = record.timestamp_ms;
                    self.oldest = Some(self.oldest.map_or(t, |o| o.min(t)));
                    self.newest = Some(self.newest.map_or(t, |n| n.max(t)));
                }
            }
            Item::Corrupt { len, .. } => {
                self.corrupt += 1;
                self.corrupt_bytes += *len as u64;
            }
            Item::Torn { len, .. } => self.torn_bytes += *len as u64,
        }
    }
}

/// A byte string in JSON: a string if it is UTF-8, else `{"base64": ...}`.
struct Bytes<'a>(&'a [u8]);

impl Serialize for Bytes<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(self.0) {
            Ok(text) => serializer.serialize_str(text),
            Err(_) => {
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry("base64", &base64(self.0))?;
                map.end()
            }
        }
    }
}

/// Standard base64 with padding (RFC 4648).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Bytes for a terminal: escaped as the error log escapes them.
fn printable(bytes: &[u8]) -> String {
    let mut out = Vec::new();
    log_escape(bytes, &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// `2026-11-23T20:49:37.123Z` for Unix milliseconds.
fn utc(ms: i64) -> String {
    let (days, ms_of_day) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    // Days to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        ms_of_day / 3_600_000,
        ms_of_day / 60_000 % 60,
        ms_of_day / 1000 % 60,
        ms_of_day % 1000
    )
}

// ---------------------------------------------------------------------------------------
// inspect

#[derive(Serialize)]
struct FileReport {
    file: String,
    kind: &'static str,
    bytes: u64,
    #[serde(flatten)]
    summary: FileSummary,
    locked: Option<bool>,
    error: Option<String>,
}

#[derive(Default, Serialize)]
struct Totals {
    files: u64,
    bytes: u64,
    records: u64,
    record_bytes: u64,
    corrupt: u64,
    corrupt_bytes: u64,
    torn_bytes: u64,
    unreadable: u64,
    locked: u64,
    oldest: Option<i64>,
    newest: Option<i64>,
}

#[derive(Serialize)]
struct Tally<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    topic: Option<Bytes<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<Bytes<'a>>,
    records: u64,
    bytes: u64,
}

fn inspect(options: &Options) -> i32 {
    let dir = &options.path;
    let mut reports = Vec::new();
    let mut totals = Totals::default();
    let mut topics: BTreeMap<Vec<u8>, (u64, u64)> = BTreeMap::new();
    let mut reasons: BTreeMap<Vec<u8>, (u64, u64)> = BTreeMap::new();
    for (name, size) in spool_files(dir, true) {
        let path = dir.join(name.file_name());
        let mut summary = FileSummary::default();
        let mut error = None;
        match fs::read(&path) {
            // Replayed and removed since the directory was read.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => error = Some(e.to_string()),
            Ok(bytes) => match format::check_file_header(&bytes) {
                Err(e) => error = Some(e.to_string()),
                Ok(()) => {
                    for item in format::scan(&bytes) {
                        summary.add(&item);
                        if let Item::Record { len, record, .. } = item {
                            for (map, key) in
                                [(&mut topics, record.topic), (&mut reasons, record.reason)]
                            {
                                let entry = map.entry(key.to_vec()).or_default();
                                entry.0 += 1;
                                entry.1 += len as u64;
                            }
                        }
                    }
                }
            },
        }
        // Taken for an instant and released: whether anyone else holds it.
        let locked = match files::try_lock(&path) {
            Ok(Some(_)) => Some(false),
            Ok(None) => Some(true),
            Err(_) => None,
        };
        totals.files += 1;
        totals.bytes += size;
        totals.records += summary.records;
        totals.record_bytes += summary.record_bytes;
        totals.corrupt += summary.corrupt;
        totals.corrupt_bytes += summary.corrupt_bytes;
        totals.torn_bytes += summary.torn_bytes;
        totals.unreadable += u64::from(error.is_some());
        totals.locked += u64::from(locked == Some(true));
        totals.oldest = summary.oldest.into_iter().chain(totals.oldest).min();
        totals.newest = summary.newest.into_iter().chain(totals.newest).max();
        reports.push(FileReport {
            file: name.file_name(),
            kind: name.kind.extension(),
            bytes: size,
            summary,
            locked,
            error,
        });
    }

    let tally = |map: &BTreeMap<Vec<u8>, (u64, u64)>| -> Vec<(Vec<u8>, u64, u64)> {
        let mut rows: Vec<_> = map.iter().map(|(k, &(r, b))| (k.clone(), r, b)).collect();
        rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        rows
    };
    let (topics, reasons) = (tally(&topics), tally(&reasons));

    let stdout = io::stdout();
    let mut out = stdout.lock();
    if options.json {
        #[derive(Serialize)]
        struct Inspection<'a> {
            dir: String,
            files: Vec<FileReport>,
            totals: Totals,
            topics: Vec<Tally<'a>>,
            reasons: Vec<Tally<'a>>,
        }
        let inspection = Inspection {
            dir: dir.display().to_string(),
            files: reports,
            totals,
            topics: topics
                .iter()
                .map(|(t, records, bytes)| Tally {
                    topic: Some(Bytes(t)),
                    reason: None,
                    records: *records,
                    bytes: *bytes,
                })
                .collect(),
            reasons: reasons
                .iter()
                .map(|(r, records, bytes)| Tally {
                    topic: None,
                    reason: Some(Bytes(r)),
                    records: *records,
                    bytes: *bytes,
                })
                .collect(),
        };
        let _ = serde_json::to_writer(&mut out, &inspection);
        let _ = writeln!(out);
    } else {
        let _ = out.write_all(inspect_table(&reports, &totals, &topics, &reasons).as_bytes());
    }
    let _ = out.flush();
    0
}

fn inspect_table(
    reports: &[FileReport],
    totals: &Totals,
    topics: &[(Vec<u8>, u64, u64)],
    reasons: &[(Vec<u8>, u64, u64)],
) -> String {
    let time = |t: Option<i64>| t.map_or_else(|| "-".to_string(), utc);
    let width = reports
        .iter()
        .map(|r| r.file.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:width$}  {:7}  {:>12}  {:>9}  {:>7}  {:>9}  {:24}  {:24}  LOCKED",
        "FILE", "KIND", "BYTES", "RECORDS", "CORRUPT", "TORN", "OLDEST", "NEWEST"
    );
    for r in reports {
        let locked = match r.locked {
            Some(true) => "yes",
            Some(false) => "no",
            None => "?",
        };
        let _ = write!(
            s,
            "{:width$}  {:7}  {:>12}  {:>9}  {:>7}  {:>9}  {:24}  {:24}  {locked}",
            r.file,
            r.kind,
            r.bytes,
            r.summary.records,
            r.summary.corrupt,
            r.summary.torn_bytes,
            time(r.summary.oldest),
            time(r.summary.newest),
        );
        if let Some(error) = &r.error {
            let _ = write!(s, "  unreadable: {error}");
        }
        s.push('\n');
    }
    let _ = writeln!(
        s,
        "\n{} files, {} bytes: {} records ({} bytes), {} corrupt regions ({} bytes), \
         {} torn tail bytes, {} unreadable, {} locked; events from {} to {}",
        totals.files,
        totals.bytes,
        totals.records,
        totals.record_bytes,
        totals.corrupt,
        totals.corrupt_bytes,
        totals.torn_bytes,
        totals.unreadable,
        totals.locked,
        time(totals.oldest),
        time(totals.newest),
    );
    for (title, rows) in [("TOPIC", topics), ("REASON", reasons)] {
        if rows.is_empty() {
            continue;
        }
        let _ = writeln!(s, "\n{:>9}  {:>12}  {title}", "RECORDS", "BYTES");
        for (name, records, bytes) in rows {
            let name = if name.is_empty() {
                "(none)".to_string()
            } else {
                printable(name)
            };
            let _ = writeln!(s, "{records:>9}  {bytes:>12}  {name}");
        }
    }
    s
}

// ---------------------------------------------------------------------------------------
// export

#[derive(Serialize)]
struct ExportLine<'a> {
    file: &'a str,
    offset: usize,
    topic: Bytes<'a>,
    key: Option<Bytes<'a>>,
    headers: Vec<(Bytes<'a>, Option<Bytes<'a>>)>,
    timestamp: i64,
    flags: Vec<String>,
    reason: Bytes<'a>,
    value: Bytes<'a>,
}

fn flag_names(flags: u8) -> Vec<String> {
    (0..8)
        .filter(|bit| flags & (1 << bit) != 0)
        .map(|bit| match 1 << bit {
            format::FLAG_POSSIBLY_DELIVERED => "possibly_delivered".to_string(),
            format::FLAG_REPLAYED => "replayed".to_string(),
            _ => format!("bit{bit}"),
        })
        .collect()
}

fn export(options: &Options) -> i32 {
    let dir = &options.path;
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut totals = FileSummary::default();
    let (mut files, mut unreadable) = (0, 0);
    for (name, _) in spool_files(dir, options.dead) {
        let file_name = name.file_name();
        let bytes = match fs::read(dir.join(&file_name)) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                eprintln!("kafka-spool: {file_name}: {e}");
                unreadable += 1;
                continue;
            }
        };
        if let Err(e) = format::check_file_header(&bytes) {
            eprintln!("kafka-spool: {file_name}: {e}");
            unreadable += 1;
            continue;
        }
        files += 1;
        for item in format::scan(&bytes) {
            totals.add(&item);
            let Item::Record { offset, record, .. } = item else {
                continue;
            };
            let line = ExportLine {
                file: &file_name,
                offset,
                topic: Bytes(record.topic),
                key: record.key.map(Bytes),
                headers: record
                    .headers
                    .iter()
                    .map(|(name, value)| (Bytes(name), value.map(Bytes)))
                    .collect(),
                timestamp: record.timestamp_ms,
                flags: flag_names(record.flags),
                reason: Bytes(record.reason),
                value: Bytes(record.value),
            };
            let written = serde_json::to_writer(&mut out, &line)
                .map_err(io::Error::from)
                .and_then(|()| out.write_all(b"\n"));
            if let Err(e) = written {
                // A reader that went away (`| head`) is not an error worth a message.
                if e.kind() != io::ErrorKind::BrokenPipe {
                    eprintln!("kafka-spool: stdout: {e}");
                }
                return 1;
            }
        }
    }
    if let Err(e) = out.flush() {
        if e.kind() != io::ErrorKind::BrokenPipe {
            eprintln!("kafka-spool: stdout: {e}");
        }
        return 1;
    }
    eprintln!(
        "kafka-spool: {} records from {files} files; {} corrupt regions ({} bytes), \
         {} torn tail bytes, {unreadable} unreadable files",
        totals.records, totals.corrupt, totals.corrupt_bytes, totals.torn_bytes
    );
    i32::from(unreadable > 0)
}

// ---------------------------------------------------------------------------------------
// Producing: replay and replay-log

/// Delivery reports, per batch (a file, or the log): delivered and failed.
#[derive(Default)]
struct Reports {
    batches: Mutex<BTreeMap<usize, (u64, u64)>>,
    errors: Mutex<BTreeMap<String, u64>>,
    /// librdkafka's messages already printed: a broker that is down repeats them.
    printed: Mutex<BTreeSet<String>>,
}

impl Reports {
    fn count(&self, batch: usize, delivered: bool) {
        let mut batches = self.batches.lock().unwrap_or_else(|e| e.into_inner());
        let entry = batches.entry(batch).or_default();
        if delivered {
            entry.0 += 1;
        } else {
            entry.1 += 1;
        }
    }

    fn error(&self, error: String) {
        *self
            .errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(error)
            .or_default() += 1;
    }

    /// Prints librdkafka's `message` once.
    fn print(&self, message: String) {
        let mut printed = self.printed.lock().unwrap_or_else(|e| e.into_inner());
        if printed.len() < 100 && printed.insert(message.clone()) {
            eprintln!("kafka-spool: librdkafka: {message}");
        }
    }

    fn batch(&self, batch: usize) -> (u64, u64) {
        let batches = self.batches.lock().unwrap_or_else(|e| e.into_inner());
        batches.get(&batch).copied().unwrap_or_default()
    }
}

impl ClientContext for Reports {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        // Errors come as error events too (below); only what is worse is printed here.
        if matches!(
            level,
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical
        ) {
            self.print(format!("{fac}: {message}"));
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.print(format!("{error}: {reason}"));
    }
}

impl ProducerContext for Reports {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, batch: usize) {
        match result {
            Ok(_) => self.count(batch, true),
            Err((e, _)) => {
                self.count(batch, false);
                self.error(e.to_string());
            }
        }
    }
}

/// A producer that sends batches of records and waits for every report of a batch.
struct Replayer {
    producer: BaseProducer<Reports>,
    /// How long a batch may wait for its last reports: message.timeout.ms and a margin.
    wait: Duration,
    rate: Option<f64>,
    started: Instant,
    sent: u64,
}

impl Replayer {
    fn new(options: &Options) -> Replayer {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", options.brokers())
            .set("enable.idempotence", "true")
            .set("partitioner", "murmur2_random")
            .set("message.timeout.ms", "30000");
        for (name, value) in &options.properties {
            config.set(name, value);
        }
        let timeout_ms = config
            .get("message.timeout.ms")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(30_000);
        let producer = config
            .create_with_context(Reports::default())
            .unwrap_or_else(|e| die(&format!("producer: {e}")));
        Replayer {
            producer,
            wait: Duration::from_millis(timeout_ms) + Duration::from_secs(10),
            rate: options.rate,
            started: Instant::now(),
            sent: 0,
        }
    }

    /// Queues one record of `batch`; `false` if it could not be queued (counted as failed).
    fn send(&mut self, batch: usize, record: &Record<'_>) -> bool {
        let failed = |reports: &Reports, why: String| {
            reports.count(batch, false);
            reports.error(why);
            false
        };
        let reports = self.producer.context();
        let Ok(topic) = std::str::from_utf8(record.topic) else {
            return failed(reports, "topic is not UTF-8".to_string());
        };
        let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
        for (name, value) in &record.headers {
            let Ok(key) = std::str::from_utf8(name) else {
                return failed(reports, "header name is not UTF-8".to_string());
            };
            headers = headers.insert(Header { key, value: *value });
        }
        let mut message = BaseRecord::with_opaque_to(topic, batch)
            .payload(record.value)
            .headers(headers);
        if let Some(key) = record.key {
            message = message.key(key);
        }
        if record.timestamp_ms != 0 {
            message = message.timestamp(record.timestamp_ms);
        }

        if let Some(rate) = self.rate {
            let due = self.started + Duration::from_secs_f64(self.sent as f64 / rate);
            while let Some(left) = due.checked_duration_since(Instant::now()) {
                self.producer.poll(left);
            }
        }
        // A full queue empties as reports come in, or as messages time out.
        let give_up = Instant::now() + self.wait;
        loop {
            match self.producer.send(message) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                    if Instant::now() < give_up =>
                {
                    message = back;
                    self.producer.poll(Duration::from_millis(100));
                }
                Err((e, _)) => return failed(self.producer.context(), e.to_string()),
            }
        }
        self.sent += 1;
        self.producer.poll(Duration::ZERO);
        true
    }

    /// Waits for every report of `batch`, whose `count` records were all passed to `send`;
    /// returns how many were delivered.
    fn finish(&self, batch: usize, count: u64) -> u64 {
        if self.producer.flush(self.wait).is_err() {
            // Should not happen (message.timeout.ms bounds every message): purged messages
            // report as failed, so that every record is accounted for.
            self.producer
                .purge(PurgeConfig::default().queue().inflight());
            let _ = self.producer.flush(Duration::from_secs(5));
        }
        let (delivered, failed) = self.producer.context().batch(batch);
        if delivered + failed < count {
            self.producer
                .context()
                .error("no delivery report".to_string());
        }
        delivered
    }

    fn report_errors(&self) {
        let errors = self
            .producer
            .context()
            .errors
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for (error, count) in errors.iter() {
            eprintln!("kafka-spool: {count} failed: {error}");
        }
    }
}

#[derive(Default, Serialize)]
struct ReplaySummary {
    files: u64,
    records: u64,
    delivered: u64,
    failed: u64,
    corrupt: u64,
    torn: u64,
    skipped_locked: u64,
    unreadable: u64,
    removed: u64,
}

fn replay(options: &Options) -> i32 {
    let dir = &options.path;
    let listed = spool_files(dir, options.dead);
    let mut replayer = Replayer::new(options);
    let mut summary = ReplaySummary::default();
    for (batch, (name, _)) in listed.into_iter().enumerate() {
        let file_name = name.file_name();
        let path = dir.join(&file_name);
        let mut locked = match files::try_lock(&path) {
            Ok(Some(locked)) => locked,
            Ok(None) => {
                if path.exists() {
                    eprintln!("kafka-spool: {file_name}: held by another process, skipped");
                    summary.skipped_locked += 1;
                }
                continue;
            }
            Err(e) => {
                eprintln!("kafka-spool: {file_name}: {e}");
                summary.unreadable += 1;
                continue;
            }
        };
        let mut bytes = Vec::new();
        if let Err(e) = locked.file.read_to_end(&mut bytes) {
            eprintln!("kafka-spool: {file_name}: {e}");
            summary.unreadable += 1;
            continue;
        }
        if let Err(e) = format::check_file_header(&bytes) {
            eprintln!("kafka-spool: {file_name}: {e}; left in place");
            summary.unreadable += 1;
            continue;
        }
        summary.files += 1;
        let mut file = FileSummary::default();
        for item in format::scan(&bytes) {
            file.add(&item);
            if let Item::Record { record, .. } = item {
                replayer.send(batch, &record);
            }
        }
        let delivered = replayer.finish(batch, file.records);
        summary.records += file.records;
        summary.delivered += delivered;
        summary.failed += file.records - delivered;
        summary.corrupt += file.corrupt;
        summary.torn += u64::from(file.torn_bytes > 0);
        let fate = if delivered < file.records {
            "kept"
        } else if options.keep {
            "kept (--keep)"
        } else {
            // Removed while still locked, so that nobody takes it over in between.
            match fs::remove_file(&locked.path) {
                Ok(()) => {
                    summary.removed += 1;
                    "removed"
                }
                Err(e) => {
                    eprintln!("kafka-spool: {file_name}: {e}");
                    "not removed"
                }
            }
        };
        eprintln!(
            "kafka-spool: {file_name}: {delivered} of {} records delivered, {} corrupt regions, \
             {} torn tail bytes; {fate}",
            file.records, file.corrupt, file.torn_bytes
        );
        drop(locked);
    }
    replayer.report_errors();
    println!("{}", serde_json::to_string(&summary).unwrap_or_default());
    i32::from(summary.failed > 0 || summary.corrupt > 0 || summary.unreadable > 0)
}

/// The event of one `message not delivered` line.
#[derive(Debug, Default, PartialEq, Eq)]
struct Failure {
    topic: Vec<u8>,
    partition: Option<i32>,
    error: Vec<u8>,
    key: Option<Vec<u8>>,
    headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    possibly_delivered: bool,
    payload: Vec<u8>,
}

/// Parses the fields after `FAILURE_MARK`, left to right: `name=value` separated by one
/// space, quoted values escaped, up to the payload's closing quote (nginx may add more after
/// it). Every field the line needs must be there once, and `bytes` must be the payload's
/// length, so a line cut short is never taken for a shorter event.
fn parse_failure(mut line: &[u8]) -> Result<Failure, String> {
    let mut failure = Failure::default();
    let (mut topic, mut error, mut bytes) = (None, None, None);
    let mut possibly_delivered = None;
    loop {
        let eq = line
            .iter()
            .position(|&b| b == b'=')
            .ok_or("cut short before the payload")?;
        let name = &line[..eq];
        if name.is_empty() || !name.iter().all(|&b| b.is_ascii_lowercase() || b == b'_') {
            return Err(format!("unexpected {:?}", printable(name)));
        }
        let name = std::str::from_utf8(name).unwrap_or_default();
        line = &line[eq + 1..];
        let (value, quoted, rest) = match line.strip_prefix(b"\"") {
            Some(text) => {
                let end = closing_quote(text).ok_or_else(|| format!("{name}: cut short"))?;
                let value =
                    log_unescape(&text[..end]).ok_or_else(|| format!("{name}: bad escape"))?;
                (value, true, &text[end + 1..])
            }
            None => {
                let end = line
                    .iter()
                    .position(|&b| b == b' ' || b == b',')
                    .unwrap_or(line.len());
                (line[..end].to_vec(), false, &line[end..])
            }
        };
        let once = |slot: &mut Option<Vec<u8>>, value: Vec<u8>| {
            if slot.replace(value).is_some() {
                Err(format!("{name} twice"))
            } else {
                Ok(())
            }
        };
        let text = matches!(name, "topic" | "error" | "key" | "header" | "payload");
        let number = matches!(name, "partition" | "possibly_delivered" | "bytes");
        if (text && !quoted) || (number && quoted) {
            return Err(format!("{name}: value not as expected"));
        }
        match name {
            "topic" => once(&mut topic, value)?,
            "error" => once(&mut error, value)?,
            "key" => once(&mut failure.key, value)?,
            "header" => failure
                .headers
                .push(match value.iter().position(|&b| b == b'=') {
                    Some(eq) => (value[..eq].to_vec(), Some(value[eq + 1..].to_vec())),
                    None => (value, None),
                }),
            "partition" => {
                let text = std::str::from_utf8(&value).unwrap_or_default();
                let partition = text
                    .parse()
                    .map_err(|_| format!("partition={:?}", printable(&value)))?;
                if failure.partition.replace(partition).is_some() {
                    return Err("partition twice".to_string());
                }
            }
            "possibly_delivered" => once(&mut possibly_delivered, value)?,
            "bytes" => once(&mut bytes, value)?,
            "payload" => {
                failure.payload = value;
                break;
            }
            // A field a later version added: skipped.
            _ => {}
        }
        line = rest
            .strip_prefix(b" ")
            .ok_or("cut short before the payload")?;
    }
    failure.topic = topic.ok_or("no topic")?;
    failure.error = error.unwrap_or_default();
    failure.possibly_delivered = match possibly_delivered.as_deref() {
        None | Some(b"0") => false,
        Some(b"1") => true,
        Some(other) => return Err(format!("possibly_delivered={:?}", printable(other))),
    };
    let bytes = bytes.ok_or("no bytes=")?;
    let bytes: usize = std::str::from_utf8(&bytes)
        .ok()
        // As the module writes it: digits, no leading zero.
        .filter(|t| t.bytes().all(|b| b.is_ascii_digit()) && (*t == "0" || !t.starts_with('0')))
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| format!("bytes={:?}", printable(&bytes)))?;
    if bytes != failure.payload.len() {
        return Err(format!(
            "bytes={bytes} but the payload has {} (line cut short?)",
            failure.payload.len()
        ));
    }
    Ok(failure)
}

/// Where an escaped value's closing quote is, escapes skipped.
fn closing_quote(text: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'"' => return Some(i),
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
    None
}

/// The failure lines of an error log: (line number, parsed or why not).
fn failure_lines(log: &[u8]) -> Vec<(usize, Result<Failure, String>)> {
    log.split(|&b| b == b'\n')
        .enumerate()
        .filter_map(|(i, line)| {
            let at = line
                .windows(FAILURE_MARK.len())
                .position(|w| w == FAILURE_MARK)?;
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            Some((i + 1, parse_failure(&line[at + FAILURE_MARK.len()..])))
        })
        .collect()
}

#[derive(Default, Serialize)]
struct LogSummary {
    lines: u64,
    bad_lines: u64,
    records: u64,
    delivered: u64,
    failed: u64,
}

fn replay_log(options: &Options) -> i32 {
    let path = &options.path;
    let log = if path.as_os_str() == "-" {
        let mut log = Vec::new();
        io::stdin()
            .read_to_end(&mut log)
            .map(|_| log)
            .unwrap_or_else(|e| die(&format!("stdin: {e}")))
    } else {
        fs::read(path).unwrap_or_else(|e| die(&format!("{}: {e}", path.display())))
    };
    let lines = failure_lines(&log);
    let mut summary = LogSummary::default();
    let mut replayer = Replayer::new(options);
    for (number, parsed) in &lines {
        summary.lines += 1;
        let failure = match parsed {
            Ok(failure) => failure,
            Err(why) => {
                eprintln!("kafka-spool: {}:{number}: bad line: {why}", path.display());
                summary.bad_lines += 1;
                continue;
            }
        };
        let record = Record {
            flags: 0,
            timestamp_ms: 0,
            reason: &failure.error,
            topic: &failure.topic,
            key: failure.key.as_deref(),
            headers: failure
                .headers
                .iter()
                .map(|(name, value)| (name.as_slice(), value.as_deref()))
                .collect(),
            value: &failure.payload,
        };
        summary.records += 1;
        replayer.send(0, &record);
    }
    summary.delivered = replayer.finish(0, summary.records);
    summary.failed = summary.records - summary.delivered;
    replayer.report_errors();
    println!("{}", serde_json::to_string(&summary).unwrap_or_default());
    i32::from(summary.failed > 0 || summary.bad_lines > 0)
}

#[cfg(test)]
mod tests {
    use super::failure_line::failure_line;
    use super::*;

    const PREFIX: &[u8] = b"2026/11/23 20:49:37 [error] 4242#4242: *17 ";
    const SUFFIX: &[u8] =
        b", client: 127.0.0.1, server: _, request: \"POST /e HTTP/1.1\", host: \"x\"";

    fn quoted(name: &str, value: &[u8]) -> Vec<u8> {
        let mut out = format!(" {name}=\"").into_bytes();
        log_escape(value, &mut out);
        out.push(b'"');
        out
    }

    /// A line as the spec writes it, headers and all.
    fn spec_line(f: &Failure) -> Vec<u8> {
        let mut line = PREFIX.to_vec();
        line.extend_from_slice(FAILURE_MARK);
        line.extend_from_slice(&quoted("topic", &f.topic)[1..]);
        line.extend_from_slice(format!(" partition={}", f.partition.unwrap()).as_bytes());
        line.extend_from_slice(&quoted("error", &f.error));
        if let Some(key) = &f.key {
            line.extend_from_slice(&quoted("key", key));
        }
        for (name, value) in &f.headers {
            let mut h = name.clone();
            h.push(b'=');
            h.extend_from_slice(value.as_deref().unwrap());
            line.extend_from_slice(&quoted("header", &h));
        }
        if f.possibly_delivered {
            line.extend_from_slice(b" possibly_delivered=1");
        }
        line.extend_from_slice(format!(" bytes={}", f.payload.len()).as_bytes());
        line.extend_from_slice(&quoted("payload", &f.payload));
        line.extend_from_slice(SUFFIX);
        line
    }

    fn tricky() -> Failure {
        Failure {
            topic: b"events".to_vec(),
            partition: Some(-1),
            error: b"Local: Message timed out".to_vec(),
            key: Some(b"k payload=\"x\" bytes=1 payload=".to_vec()),
            headers: vec![
                (b"trace".to_vec(), Some(b"a=b=c".to_vec())),
                // Split at the first `=`: a name cannot hold one, a value can.
                (
                    b"h payload".to_vec(),
                    Some(b"=\" payload=\"\x00\xff\\\"".to_vec()),
                ),
            ],
            possibly_delivered: true,
            payload: b"{\"a\":\"x\ny\"} payload=\"zz\" \xff\x7f\\".to_vec(),
        }
    }

    #[test]
    fn reads_what_the_module_writes() {
        let mut line = PREFIX.to_vec();
        line.extend_from_slice(&failure_line(
            "t1",
            3,
            Some(b"u1 payload="),
            "Broker: Unknown topic",
            b"\x00{\"v\":1}\xe2\x82",
        ));
        line.extend_from_slice(SUFFIX);
        let parsed = failure_lines(&line);
        assert_eq!(
            parsed,
            vec![(
                1,
                Ok(Failure {
                    topic: b"t1".to_vec(),
                    partition: Some(3),
                    error: b"Broker: Unknown topic".to_vec(),
                    key: Some(b"u1 payload=".to_vec()),
                    headers: vec![],
                    possibly_delivered: false,
                    payload: b"\x00{\"v\":1}\xe2\x82".to_vec(),
                })
            )]
        );
    }

    #[test]
    fn reads_every_field_left_to_right() {
        let f = tricky();
        let mut log = b"2026/11/23 20:49:36 [notice] 1#1: start\r\n".to_vec();
        log.extend_from_slice(&spec_line(&f));
        log.extend_from_slice(b"\n\n");
        let no_key = Failure {
            key: None,
            headers: vec![],
            possibly_delivered: false,
            payload: vec![],
            ..tricky()
        };
        let mut line = spec_line(&no_key);
        line.truncate(line.len() - SUFFIX.len());
        log.extend_from_slice(&line);
        log.extend_from_slice(b"\r\n");
        assert_eq!(failure_lines(&log), vec![(2, Ok(f)), (4, Ok(no_key))]);
    }

    #[test]
    fn a_line_cut_anywhere_is_bad() {
        let line = spec_line(&tricky());
        let end = line.len() - SUFFIX.len();
        for cut in PREFIX.len() + FAILURE_MARK.len()..end {
            let parsed = failure_lines(&line[..cut]);
            assert_eq!(parsed.len(), 1);
            assert!(parsed[0].1.is_err(), "cut at {cut}: {:?}", parsed[0].1);
        }
        for cut in end..=line.len() {
            assert_eq!(failure_lines(&line[..cut]), vec![(1, Ok(tricky()))]);
        }
    }

    #[test]
    fn bad_lines() {
        let good = String::from_utf8(spec_line(&tricky())).unwrap();
        let bytes = format!(" bytes={} ", tricky().payload.len());
        let fewer = format!(" bytes={} ", tricky().payload.len() - 1);
        let zero = format!(" bytes=0{} ", tricky().payload.len());
        let junk = format!(" bytes={}x ", tricky().payload.len());
        for (from, to) in [
            (bytes.as_str(), fewer.as_str()),
            (&bytes, &zero),
            (&bytes, &junk),
            (&bytes, " bytes= "),
            (&bytes, " "),
            ("topic=\"events\"", "topic=events"),
            ("topic=\"events\"", "topic=\"ev\\q\""),
            (" partition=-1", " partition=x"),
            (" possibly_delivered=1", " possibly_delivered=2"),
            (" error=", " error=\"e\" error="),
            (" error=", "  error="),
            (" error=", " Error="),
        ] {
            assert!(good.contains(from), "{from}");
            let bad = good.replacen(from, to, 1);
            let parsed = failure_lines(bad.as_bytes());
            assert!(parsed[0].1.is_err(), "{to}: {:?}", parsed[0].1);
        }
        // A field from a later version is skipped.
        let newer = good.replacen(
            " possibly_delivered=",
            " attempt=3 note=\"x \\\" y\" possibly_delivered=",
            1,
        );
        assert_eq!(failure_lines(newer.as_bytes()), vec![(1, Ok(tricky()))]);
    }

    #[test]
    fn base64_and_times() {
        for (input, output) in [
            (&b""[..], ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg=="),
            (b"\xff\xfe\xfd", "//79"),
        ] {
            assert_eq!(base64(input), output);
        }
        assert_eq!(utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc(1_764_000_000_123), "2025-11-24T16:00:00.123Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(utc(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(flag_names(7), ["possibly_delivered", "replayed", "bit2"]);
    }
}
