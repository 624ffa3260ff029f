//! The integration-test harness: the real nginx binary with the module, in a temporary
//! prefix, a real Kafka-protocol broker, and a consumer that reads back what nginx produced.
#![allow(dead_code)]

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The nginx binary under test: `NGINX_BIN`, or the one `make build` leaves in build/sbin.
pub fn nginx_bin() -> PathBuf {
    std::env::var_os("NGINX_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("build/sbin/nginx"))
}

/// The module under test: `NGINX_MODULE`, or build/modules.
pub fn module_path() -> PathBuf {
    std::env::var_os("NGINX_MODULE")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("build/modules/ngx_http_kafka_module.so"))
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fresh directory under the system temp dir, removed when dropped if the test passed.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!(
            "nginx-kafka-{tag}-{}-{}",
            std::process::id(),
            free_port()
        ));
        fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

/// Lines that fail any test when they appear in an error log.
pub const FATAL_MARKS: &[&str] = &["[alert]", "[crit]", "exited on signal", "panicked"];

/// A running nginx (master and workers), started in the foreground as our child.
pub struct Nginx {
    pub prefix: TempDir,
    pub port: u16,
    child: Option<Child>,
    /// Extra marks that this test expects and that must not fail it.
    pub allowed_marks: Vec<String>,
    /// A command nginx runs under (valgrind), if any.
    wrapper: Vec<String>,
}

impl Nginx {
    /// Lays out a prefix: conf/ (the files given, `{port}`, `{brokers}` and `{module}`
    /// replaced), logs/, and the module.
    pub fn prepare(files: &[(&str, &str)], brokers: &str) -> (TempDir, u16) {
        let prefix = TempDir::new("nginx");
        let port = free_port();
        for dir in ["conf", "logs"] {
            fs::create_dir_all(prefix.0.join(dir)).unwrap();
        }
        for (name, text) in files {
            let path = prefix.0.join("conf").join(name);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, substitute(text, port, brokers)).unwrap();
        }
        (prefix, port)
    }

    /// The example configuration in nginx/, pointed at `brokers`, listening on a free port.
    pub fn example_files() -> Vec<(String, String)> {
        let mut files = Vec::new();
        collect(&repo().join("nginx"), Path::new(""), &mut files);
        files
            .into_iter()
            .map(|(name, text)| {
                let text = text
                    .replace("modules/ngx_http_kafka_module.so", "{module}")
                    .replace("kafka_brokers 127.0.0.1:9092;", "kafka_brokers {brokers};")
                    .replace("listen 127.0.0.1:8080;", "listen 127.0.0.1:{port};")
                    .replace("http://127.0.0.1:8080/", "http://127.0.0.1:{port}/");
                (name, text)
            })
            .collect()
    }

    pub fn start(files: &[(&str, &str)], brokers: &str) -> Nginx {
        Self::start_wrapped(files, brokers, &[])
    }

    /// Starts nginx as the argument of `wrapper` (for example valgrind and its options).
    pub fn start_wrapped(files: &[(&str, &str)], brokers: &str, wrapper: &[&str]) -> Nginx {
        let (prefix, port) = Self::prepare(files, brokers);
        let mut nginx = Nginx {
            prefix,
            port,
            child: None,
            allowed_marks: Vec::new(),
            wrapper: wrapper.iter().map(|s| s.to_string()).collect(),
        };
        nginx.launch();
        nginx
    }

    /// Starts nginx with a single nginx.conf.
    pub fn start_conf(conf: &str, brokers: &str) -> Nginx {
        Self::start(&[("nginx.conf", conf)], brokers)
    }

    pub fn start_example(brokers: &str) -> Nginx {
        let files = Self::example_files();
        let refs: Vec<(&str, &str)> = files
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        Self::start(&refs, brokers)
    }

    fn launch(&mut self) {
        let mut command = match self.wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(nginx_bin());
                c
            }
            None => Command::new(nginx_bin()),
        };
        let child = command
            .arg("-p")
            .arg(&self.prefix.0)
            .args([
                "-c",
                "conf/nginx.conf",
                "-e",
                "logs/stderr.log",
                "-g",
                "daemon off;",
            ])
            .stdin(Stdio::null())
            .spawn()
            .expect("nginx starts");
        self.child = Some(child);
        let slow = if self.wrapper.is_empty() { 1 } else { 10 };
        let deadline = Instant::now() + Duration::from_secs(15 * slow);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("nginx exited at start ({status}):\n{}", self.logs());
            }
            assert!(
                Instant::now() < deadline,
                "nginx does not listen:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // Let every worker start its producer.
        std::thread::sleep(Duration::from_millis(200 * slow));
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: signals our own child process.
        unsafe { libc::kill(self.pid(), sig) };
    }

    /// `nginx -s reload`, then waits until the old workers are gone.
    pub fn reload(&self) {
        let before = self.workers();
        self.signal(libc::SIGHUP);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let now = self.workers();
            if !now.is_empty() && before.iter().all(|p| !now.contains(p)) {
                break;
            }
            assert!(Instant::now() < deadline, "old workers did not exit");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Worker pids, from /proc.
    pub fn workers(&self) -> Vec<i32> {
        let mut pids = Vec::new();
        for entry in fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let after = stat.rsplit_once(") ").map(|x| x.1).unwrap_or("");
            let ppid: i32 = after
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            if ppid == self.pid() && !after.starts_with('Z') {
                pids.push(pid);
            }
        }
        pids
    }

    /// Stops nginx with `sig` (QUIT: graceful, TERM: fast) and waits for it to exit.
    pub fn stop_with(&mut self, sig: i32) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: signals our own child process.
        unsafe { libc::kill(child.id() as i32, sig) };
        let deadline =
            Instant::now() + Duration::from_secs(if self.wrapper.is_empty() { 30 } else { 120 });
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("nginx did not exit");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn quit(&mut self) {
        self.stop_with(libc::SIGQUIT);
    }

    /// Every log file in logs/, concatenated.
    pub fn logs(&self) -> String {
        let mut all = String::new();
        let mut names: Vec<_> = fs::read_dir(self.prefix.0.join("logs"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        names.sort();
        for path in names {
            if path.extension().is_some_and(|e| e == "log") {
                all.push_str(&String::from_utf8_lossy(
                    &fs::read(&path).unwrap_or_default(),
                ));
            }
        }
        all
    }

    pub fn log(&self, name: &str) -> String {
        String::from_utf8_lossy(
            &fs::read(self.prefix.0.join("logs").join(name)).unwrap_or_default(),
        )
        .into_owned()
    }

    pub fn url(&self, path: &str) -> String {
        format!("127.0.0.1:{}{}", self.port, path)
    }

    /// Checks the logs for alerts, crits and crashes.
    pub fn check_logs(&self) {
        let logs = self.logs();
        for line in logs.lines() {
            if FATAL_MARKS.iter().any(|m| line.contains(m))
                && !self.allowed_marks.iter().any(|m| line.contains(m.as_str()))
            {
                panic!("fatal line in the error log: {line}\n--- logs ---\n{logs}");
            }
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop_with(libc::SIGQUIT);
        if !std::thread::panicking() {
            self.check_logs();
        }
    }
}

fn collect(root: &Path, rel: &Path, out: &mut Vec<(String, String)>) {
    for entry in fs::read_dir(root.join(rel)).unwrap().flatten() {
        let rel = rel.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            collect(root, &rel, out);
        } else {
            let text = fs::read_to_string(root.join(&rel)).unwrap();
            out.push((rel.to_string_lossy().into_owned(), text));
        }
    }
}

fn substitute(text: &str, port: u16, brokers: &str) -> String {
    text.replace("{port}", &port.to_string())
        .replace("{brokers}", brokers)
        .replace("{module}", &module_path().to_string_lossy())
}

/// `nginx -t` on a configuration: (success, what nginx printed).
pub fn config_test(conf: &str) -> (bool, String) {
    let (prefix, _) = Nginx::prepare(&[("nginx.conf", conf)], "127.0.0.1:9");
    let out = Command::new(nginx_bin())
        .arg("-p")
        .arg(&prefix.0)
        .args(["-c", "conf/nginx.conf", "-e", "logs/stderr.log", "-t"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr).into_owned()
        + &fs::read_to_string(prefix.0.join("logs/stderr.log")).unwrap_or_default();
    (out.status.success(), text)
}

/// The error-log level of `conf_with` configurations: `NGINX_ERROR_LOG_LEVEL`, or `info`.
/// `make test-debian` runs suites at `debug` on Debian's `--with-debug` nginx, where nginx
/// logs every timer and event the module creates.
pub fn error_log_level() -> String {
    std::env::var("NGINX_ERROR_LOG_LEVEL").unwrap_or_else(|_| "info".to_string())
}

/// A minimal configuration around one `server` body, for tests of one feature.
pub fn conf_with(http: &str, server: &str) -> String {
    let level = error_log_level();
    format!(
        "load_module {{module}};\n\
         worker_processes 1;\n\
         error_log logs/error.log {level};\n\
         pid logs/nginx.pid;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n\
           access_log off;\n\
           client_body_temp_path logs/body;\n\
           kafka_brokers {{brokers}};\n\
           {http}\n\
           server {{\n\
             listen 127.0.0.1:{{port}};\n\
             {server}\n\
           }}\n\
         }}\n"
    )
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// An HTTP/1.1 connection: requests are written as given, responses parsed one by one.
pub struct Http {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Http {
    pub fn connect(port: u16) -> Http {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        Http {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send_raw(&mut self, request: &[u8]) -> Response {
        self.stream.write_all(request).unwrap();
        self.read_response()
    }

    /// A request with a Content-Length body.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if !body.is_empty() || method == "POST" || method == "PUT" {
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body);
        self.send_raw(&bytes)
    }

    pub fn post(&mut self, path: &str, topic: &str, body: &[u8]) -> Response {
        self.request("POST", path, &[("topic", topic)], body)
    }

    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 65536];
        match self.stream.read(&mut chunk) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    pub fn read_response(&mut self) -> Response {
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i;
            }
            assert!(self.fill(), "connection closed before a response");
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        self.buf.drain(..head_end + 4);
        let mut lines = head.lines();
        let status: u16 = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let mut headers = HashMap::new();
        for line in lines {
            if let Some((k, v)) = line.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let len: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while self.buf.len() < len {
            assert!(self.fill(), "connection closed inside a body");
        }
        let body = self.buf.drain(..len).collect();
        Response {
            status,
            headers,
            body,
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One request on a fresh connection.
pub fn post(port: u16, path: &str, topic: &str, body: &[u8]) -> Response {
    Http::connect(port).post(path, topic, body)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub partition: i32,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
}

/// Reads `topic` from the beginning of every partition until `want` messages arrived or
/// nothing came for `idle`.
pub fn consume(brokers: &str, topic: &str, want: usize, idle: Duration) -> Vec<Record> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "nginx-kafka-tests")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let mut list = TopicPartitionList::new();
    for t in metadata.topics() {
        for p in t.partitions() {
            list.add_partition_offset(topic, p.id(), Offset::Beginning)
                .unwrap();
        }
    }
    consumer.assign(&list).unwrap();
    read_records(&consumer, want, idle)
}

pub fn read_records(consumer: &BaseConsumer, want: usize, idle: Duration) -> Vec<Record> {
    let mut out = Vec::new();
    let mut last = Instant::now();
    while out.len() < want && last.elapsed() < idle {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            out.push(Record {
                partition: m.partition(),
                key: m.key().map(<[u8]>::to_vec),
                value: m.payload().unwrap_or_default().to_vec(),
            });
            last = Instant::now();
        }
    }
    // A short grace period shows any message beyond the expected count.
    if out.len() == want {
        let until = Instant::now() + Duration::from_millis(300);
        while Instant::now() < until {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) {
                out.push(Record {
                    partition: m.partition(),
                    key: m.key().map(<[u8]>::to_vec),
                    value: m.payload().unwrap_or_default().to_vec(),
                });
            }
        }
    }
    out
}

/// The workers' exit counts, summed over every `kafka: producer stopped` line in `log`:
/// (delivered, not delivered).
pub fn exit_counts(log: &str) -> (u64, u64) {
    let mut sums = (0, 0);
    for line in log
        .lines()
        .filter(|l| l.contains("kafka: producer stopped:"))
    {
        let words: Vec<&str> = line.split([' ', ',', ';']).collect();
        for (i, w) in words.iter().enumerate() {
            let n = || words[i - 1].parse::<u64>().unwrap();
            match (*w, words.get(i + 1)) {
                ("delivered", _) if words[i - 1] != "not" => sums.0 += n(),
                ("not", Some(&"delivered")) => sums.1 += n(),
                _ => {}
            }
        }
    }
    sums
}

/// Payloads of the `message not delivered` lines in `log`, unescaped.
pub fn undelivered_payloads(log: &str) -> Vec<Vec<u8>> {
    log.lines()
        .filter_map(|l| {
            failure_fields(l)?
                .into_iter()
                .find(|(name, _)| name == "payload")
                .map(|(_, v)| v)
        })
        .collect()
}

/// The fields of a `message not delivered` line, read left to right: a quoted value may hold
/// anything, escaped, even ` payload="` (a key chosen by a client), so searching for a
/// field's name is not enough.
pub fn failure_fields(line: &str) -> Option<Vec<(String, Vec<u8>)>> {
    let start = line.find("kafka: message not delivered: ")? + 30;
    let text = &line.as_bytes()[start..];
    let mut fields = Vec::new();
    let mut i = 0;
    while i < text.len() {
        while text.get(i) == Some(&b' ') {
            i += 1;
        }
        let eq = i + text[i..].iter().position(|&b| b == b'=')?;
        let name = String::from_utf8_lossy(&text[i..eq]).into_owned();
        i = eq + 1;
        if text.get(i) == Some(&b'"') {
            let from = i + 1;
            i = from;
            while i < text.len() && text[i] != b'"' {
                i += if text[i] == b'\\' { 2 } else { 1 };
            }
            fields.push((name, unescape(&text[from..i.min(text.len())])));
            i += 1;
        } else {
            let end = text[i..]
                .iter()
                .position(|&b| b == b' ')
                .map_or(text.len(), |p| i + p);
            fields.push((name, text[i..end].to_vec()));
            i = end;
        }
    }
    Some(fields)
}

/// The inverse of the module's log escaping (`\"`, `\\`, `\xHH`).
pub fn unescape(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < text.len() {
        if text[i] == b'\\' && i + 1 < text.len() {
            if text[i + 1] == b'x' {
                let hex = std::str::from_utf8(&text[i + 2..i + 4]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 4;
            } else {
                out.push(text[i + 1]);
                i += 2;
            }
        } else {
            out.push(text[i]);
            i += 1;
        }
    }
    out
}

pub fn postdata() -> Vec<u8> {
    fs::read(repo().join("nginx/postdata.json")).unwrap()
}

/// Established TCP connections whose local port is `port` (nginx's side), from /proc.
pub fn established_to(port: u16) -> usize {
    let mut n = 0;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state)) = (cols.get(1), cols.get(3)) else {
                continue;
            };
            let local_port = local
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port) && *state == "01" {
                n += 1;
            }
        }
    }
    n
}
