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

pub mod ledger;

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
    /// The environment nginx starts with, beyond this process's (`AWS_*` of its own only).
    env: Vec<(String, String)>,
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
            env: Vec::new(),
        };
        nginx.launch();
        nginx
    }

    /// Starts nginx with a single nginx.conf.
    pub fn start_conf(conf: &str, brokers: &str) -> Nginx {
        Self::start(&[("nginx.conf", conf)], brokers)
    }

    /// Starts nginx with a single nginx.conf and these `AWS_*` variables (and no others).
    pub fn start_conf_env(conf: &str, brokers: &str, env: &[(&str, &str)]) -> Nginx {
        let (prefix, port) = Self::prepare(&[("nginx.conf", conf)], brokers);
        let mut nginx = Nginx {
            prefix,
            port,
            child: None,
            allowed_marks: Vec::new(),
            wrapper: Vec::new(),
            env: env
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        };
        nginx.launch();
        nginx
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
        if !self.env.is_empty() {
            for (name, _) in std::env::vars().filter(|(n, _)| n.starts_with("AWS_")) {
                command.env_remove(name);
            }
            command.envs(self.env.iter().map(|(n, v)| (n.as_str(), v.as_str())));
        }
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
    /// Record headers, in order (name, value).
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Record {
    /// The value of header `name`, if the record has one.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }
}

fn record_of(m: &rdkafka::message::BorrowedMessage<'_>) -> Record {
    use rdkafka::message::Headers;
    Record {
        partition: m.partition(),
        key: m.key().map(<[u8]>::to_vec),
        value: m.payload().unwrap_or_default().to_vec(),
        headers: m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                    .collect()
            })
            .unwrap_or_default(),
    }
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
            out.push(record_of(&m));
            last = Instant::now();
        }
    }
    // A short grace period shows any message beyond the expected count.
    if out.len() == want {
        let until = Instant::now() + Duration::from_millis(300);
        while Instant::now() < until {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) {
                out.push(record_of(&m));
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

/// Polls `done` every 100 ms until it holds; fails the test after `timeout`.
pub fn poll_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One GET on a fresh connection that the server closes (`Connection: close`): the body
/// may come with a Content-Length or chunked, as servers other than nginx's `return` send it.
pub fn get(port: u16, path: &str) -> Response {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let head_end = find(&raw, b"\r\n\r\n").expect("a response head");
    let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let mut headers = HashMap::new();
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let rest = &raw[head_end + 4..];
    let body = if headers
        .get("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        dechunk(rest)
    } else {
        match headers
            .get("content-length")
            .and_then(|v| v.parse::<usize>().ok())
        {
            Some(len) => rest[..len.min(rest.len())].to_vec(),
            None => rest.to_vec(),
        }
    };
    Response {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = find(data, b"\r\n") {
        let size_text = String::from_utf8_lossy(&data[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
            .expect("a chunk size");
        data = &data[eol + 2..];
        if size == 0 {
            break;
        }
        out.extend_from_slice(&data[..size.min(data.len())]);
        data = &data[(size + 2).min(data.len())..];
    }
    out
}

/// A URL query component, percent-encoded.
pub fn url_encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One sample of a Prometheus text exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: std::collections::BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, name: &str) -> &str {
        self.labels.get(name).map(String::as_str).unwrap_or("")
    }
}

/// A Prometheus text exposition (format 0.0.4), read as Prometheus reads it.
#[derive(Debug, Default)]
pub struct Exposition {
    pub samples: Vec<Sample>,
    /// `# TYPE` of each family.
    pub types: HashMap<String, String>,
}

impl Exposition {
    /// Panics, with the line, on anything that is not valid text format.
    pub fn parse(text: &str) -> Exposition {
        let mut out = Exposition::default();
        for line in text.lines() {
            let line = line.trim_end();
            if line.is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
                out.types.insert(name.to_string(), kind.to_string());
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            out.samples.push(parse_sample(line));
        }
        out
    }

    /// Samples of one metric whose labels include every `(name, value)` in `matching`.
    pub fn find<'a>(&'a self, name: &str, matching: &[(&str, &str)]) -> Vec<&'a Sample> {
        self.samples
            .iter()
            .filter(|s| s.name == name && matching.iter().all(|(k, v)| s.label(k) == *v))
            .collect()
    }

    /// The sum of `find`'s values.
    pub fn sum(&self, name: &str, matching: &[(&str, &str)]) -> f64 {
        self.find(name, matching).iter().map(|s| s.value).sum()
    }
}

fn parse_sample(line: &str) -> Sample {
    let bad = || -> ! { panic!("not a text-format sample: {line:?}") };
    let name_end = line.find(['{', ' ']).unwrap_or_else(|| bad());
    let name = line[..name_end].to_string();
    let mut labels = std::collections::BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(mut l) = rest.strip_prefix('{') {
        loop {
            l = l.trim_start_matches([',', ' ']);
            if let Some(after) = l.strip_prefix('}') {
                rest = after;
                break;
            }
            let (key, after) = l.split_once("=\"").unwrap_or_else(|| bad());
            let mut value = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                match chars.next() {
                    Some((i, '"')) => break i,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, c)) => value.push(c),
                        None => bad(),
                    },
                    Some((_, c)) => value.push(c),
                    None => bad(),
                }
            };
            labels.insert(key.trim().to_string(), value);
            l = &after[end + 1..];
        }
    }
    let value_text = rest.split_whitespace().next().unwrap_or_else(|| bad());
    let value = match value_text {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().unwrap_or_else(|_| bad()),
    };
    Sample {
        name,
        labels,
        value,
    }
}

/// `promtool check metrics` on an exposition: (exit status 0, what it printed). promtool
/// parses the text as Prometheus does and lints it (help texts, counter names, units).
pub fn promtool_check(text: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (apt: prometheus) runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let printed =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), printed)
}

/// A real Prometheus server of our own (Debian's /usr/bin/prometheus), on a free port, with
/// its storage in a temporary directory, scraping one target every second. Dropping it
/// stops it.
pub struct Prometheus {
    pub port: u16,
    child: Option<Child>,
    dir: TempDir,
}

/// The `job` label Prometheus gives the target it scrapes.
pub const PROMETHEUS_JOB: &str = "nginx";

impl Prometheus {
    /// Starts Prometheus scraping `http://127.0.0.1:{target_port}{metrics_path}`, and waits
    /// until it is ready to answer queries.
    pub fn start(target_port: u16, metrics_path: &str) -> Prometheus {
        let dir = TempDir::new("prometheus");
        let port = free_port();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: {PROMETHEUS_JOB}\n    metrics_path: '{metrics_path}'\n    \
             static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n"
        );
        fs::write(dir.0.join("prometheus.yml"), config).unwrap();
        let log = fs::File::create(dir.0.join("prometheus.log")).unwrap();
        let child = Command::new(
            std::env::var_os("PROMETHEUS_BIN").unwrap_or_else(|| "/usr/bin/prometheus".into()),
        )
        .arg(format!(
            "--config.file={}",
            dir.0.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.0.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("prometheus (apt: prometheus) starts");
        let mut prometheus = Prometheus {
            port,
            child: Some(child),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = prometheus.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "prometheus exited at start ({status}):\n{}",
                    prometheus.log()
                );
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok()
                && get(port, "/-/ready").status == 200
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus is not ready:\n{}",
                prometheus.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        prometheus
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    /// What Prometheus logged.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.0.join("prometheus.log")).unwrap_or_default()
    }

    /// A GET on Prometheus's HTTP API, as JSON; panics unless `status` is `success`.
    pub fn api(&self, path: &str) -> serde_json::Value {
        let r = get(self.port, path);
        let json: serde_json::Value = serde_json::from_slice(&r.body)
            .unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {}", r.text()));
        assert_eq!(json["status"], "success", "{path}: {json}");
        json
    }

    /// An instant query: each series of the resulting vector, as (labels, value).
    pub fn query(&self, promql: &str) -> Vec<(std::collections::BTreeMap<String, String>, f64)> {
        let json = self.api(&format!("/api/v1/query?query={}", url_encode(promql)));
        let data = &json["data"];
        let value = |v: &serde_json::Value| -> f64 {
            v[1].as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("{promql}: odd value {v}"))
        };
        match data["resultType"].as_str() {
            Some("vector") => data["result"]
                .as_array()
                .unwrap()
                .iter()
                .map(|series| {
                    let labels = series["metric"]
                        .as_object()
                        .unwrap()
                        .iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                        .collect();
                    (labels, value(&series["value"]))
                })
                .collect(),
            Some("scalar") => vec![(Default::default(), value(&data["result"]))],
            other => panic!("{promql}: unexpected result type {other:?}: {json}"),
        }
    }

    /// The value of a query that yields one series (or a scalar); `None` for an empty result.
    pub fn query_value(&self, promql: &str) -> Option<f64> {
        let result = self.query(promql);
        assert!(
            result.len() <= 1,
            "{promql}: more than one series: {result:?}"
        );
        result.first().map(|(_, v)| *v)
    }

    /// The scrape target's health (`up`, `down`, `unknown`) and last scrape error.
    pub fn target(&self) -> Option<(String, String)> {
        let json = self.api("/api/v1/targets");
        let target = json["data"]["activeTargets"].as_array()?.first()?.clone();
        Some((
            target["health"].as_str().unwrap_or_default().to_string(),
            target["lastError"].as_str().unwrap_or_default().to_string(),
        ))
    }

    /// Waits until Prometheus has scraped the target successfully at least once.
    pub fn wait_for_scrape(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let target = self.target();
            if let Some((health, error)) = &target {
                if health == "up"
                    && self.query_value(&format!("up{{job=\"{PROMETHEUS_JOB}\"}}")) == Some(1.0)
                {
                    assert!(error.is_empty(), "scrape error: {error}");
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "prometheus did not scrape the target: {target:?}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: signals our own child process, by its pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        while child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Waits until the cluster's metadata lists topic `name` with all its `partitions` (a topic
/// just created is not at once visible everywhere); `context` says more when it does not.
pub fn wait_for_topic(brokers: &str, name: &str, partitions: i32, context: impl Fn() -> String) {
    let probe: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(md) = probe.fetch_metadata(Some(name), Duration::from_secs(5)) {
            if md
                .topics()
                .iter()
                .any(|t| t.error().is_none() && t.partitions().len() == partitions as usize)
            {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "topic {name} does not appear:\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Two CAs (`ca.pem`, `other-ca.pem`), and a server certificate (`server.pem`,
/// `server.key`) that `ca` signs for `localhost` only (no IP address), made by `openssl`.
pub fn test_certificates(dir: &Path) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    for ca in ["ca", "other-ca"] {
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={ca}"),
            "-keyout",
            &format!("{ca}.key"),
            "-out",
            &format!("{ca}.pem"),
        ]);
    }
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    fs::write(dir.join("ext.cnf"), "subjectAltName=DNS:localhost\n").unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "server.pem",
    ]);
}
