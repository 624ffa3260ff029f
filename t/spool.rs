//! Nothing lost: under load, whatever goes wrong (a broker down or killed, a topic created
//! late, reloads, a fast stop, a worker or the whole nginx SIGKILLed, a full or read-only
//! spool, a damaged spool file), every event answered 2xx is read back from Kafka byte for
//! byte (or, without a spool, found in the error log), per `kafka_delivery` and
//! `kafka_spool`. Each scenario keeps a ledger (t/common/ledger.rs) of every request and
//! prints one line: `ledger <scenario>: accepted=.. delivered=.. duplicated=.. missing=..`.
//! Duplicates are allowed (delivery is at least once); refusals are not acceptances.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::Duration;

use common::ledger::*;
use common::*;
use rdkafka::mocking::MockCluster;

/// How long the reader waits for a message before it gives up, and in all.
const IDLE: Duration = Duration::from_secs(20);
const CAP: Duration = Duration::from_secs(90);

/// A spool directory the workers (`user nobody` under a root master) can write.
fn spool_dir(tag: &str) -> TempDir {
    let dir = TempDir::new(tag);
    set_mode(&dir.0, 0o777);
    dir
}

fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// A configuration with `workers` workers; `http` and `server` as written.
fn conf(workers: usize, http: &str, server: &str) -> String {
    conf_with(&format!("keepalive_requests 1000000;\n{http}"), server).replace(
        "worker_processes 1;",
        &format!("worker_processes {workers};"),
    )
}

/// Lets a running load go on for `d`.
fn keep_loading(load: &Running, d: Duration) {
    load.wait_for(d, |_, _, _| false);
}

/// The `kafka: spool ...` lines workers write when they exit, for the report.
fn print_spool_lines(log: &str) {
    for line in log.lines().filter(|l| l.contains("kafka: spool \"")) {
        println!("  {}", line.split("kafka: ").nth(1).unwrap_or(line));
    }
}

/// Sums `N <what>` over the workers' exit lines (`N corrupt regions`, `N files adopted`).
fn exit_count(log: &str, what: &str) -> u64 {
    log.lines()
        .filter(|l| l.contains("kafka: spool \""))
        .filter_map(|l| {
            let before = l.split(what).next()?;
            before
                .rsplit([' ', ','])
                .find(|w| !w.is_empty())?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

fn kafka_spool(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(repo().join("build/bin/kafka-spool"))
        .args(args)
        .output()
        .expect("build/bin/kafka-spool runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// 1. A broker down for 10 s in the middle of the load, then back.

/// `message.timeout.ms 3000`: events fail during the outage, so the spool (or the error log)
/// does the work.
fn broker_outage(scenario: &str, delivery: &str, spool: bool) {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("outage", 3, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let dir = spool_dir("outage-spool");
    let spool_line = if spool {
        format!("kafka_spool {} fsync=100ms;", dir.0.display())
    } else {
        String::new()
    };
    let conf = conf(
        2,
        &format!(
            "{spool_line}\n\
             kafka_option message.timeout.ms 3000;\n\
             kafka_option reconnect.backoff.max.ms 200;"
        ),
        &format!(
            "location = /in {{ kafka_ingest; kafka_topic outage; kafka_delivery {delivery}; }}"
        ),
    );
    let mut nginx = Nginx::start_conf(&conf, &brokers);
    let load = Load::new(nginx.port, "/in")
        .clients(8)
        .rate(Some(250.0))
        .max_events(8_000)
        .start(scenario);
    load.wait_for(Duration::from_secs(10), |_, ok, _| ok >= 300);
    cluster.broker_down(1).unwrap();
    keep_loading(&load, Duration::from_secs(10));
    cluster.broker_up(1).unwrap();
    keep_loading(&load, Duration::from_secs(3));
    let mut ledger = load.stop();
    if !spool {
        // Every accepted event is delivered or has failed within message.timeout.ms.
        thread::sleep(Duration::from_secs(4));
        ledger.recover_from_log(&nginx.logs());
    }
    ledger.read_back(&brokers, &["outage"], IDLE, CAP);
    nginx.quit();
    nginx.check_logs();
    let report = ledger.report(scenario);
    report.print();
    print_spool_lines(&nginx.logs());
    report.assert_missing_zero();
    if delivery == "acked" {
        assert!(
            report.refusals.keys().any(|k| k.starts_with("503 ")),
            "the outage was seen as refusals: {}",
            report.line()
        );
    }
}

#[test]
fn outage_queued_without_spool_is_logged() {
    broker_outage("outage-queued-no-spool", "queued", false);
}

#[test]
fn outage_queued_with_spool() {
    broker_outage("outage-queued", "queued", true);
}

#[test]
fn outage_durable() {
    broker_outage("outage-durable", "durable", true);
}

#[test]
fn outage_acked() {
    broker_outage("outage-acked", "acked", true);
}

// 2. tansu SIGKILLed and started again mid-load.

/// tansu keeps its data in a local S3 server (moto), so that what it acknowledged before the
/// SIGKILL is still there after it starts again (its memory engine would lose it).

#[test]
fn tansu_killed_and_restarted() {
    let moto = Moto::start();
    let mut tansu = DurableTansu::start(&moto, "ledger-tansu");
    tansu.create_topic("killed", 3);
    let brokers = tansu.brokers();
    let dir = spool_dir("tansu-spool");
    let conf = conf(
        2,
        &format!(
            "kafka_spool {} fsync=100ms;\n\
             kafka_option message.timeout.ms 3000;\n\
             kafka_option reconnect.backoff.max.ms 200;",
            dir.0.display()
        ),
        "location = /in { kafka_ingest; kafka_topic killed; kafka_delivery queued; }",
    );
    let mut nginx = Nginx::start_conf(&conf, &brokers);
    let load = Load::new(nginx.port, "/in")
        .clients(6)
        .rate(Some(200.0))
        .max_events(6_000)
        .start("tansu-killed");
    load.wait_for(Duration::from_secs(10), |_, ok, _| ok >= 300);
    tansu.kill();
    keep_loading(&load, Duration::from_secs(5));
    tansu.restart();
    keep_loading(&load, Duration::from_secs(4));
    let mut ledger = load.stop();
    ledger.read_back(
        &brokers,
        &["killed"],
        Duration::from_secs(30),
        Duration::from_secs(120),
    );
    nginx.quit();
    nginx.check_logs();
    let report = ledger.report("tansu-killed");
    report.print();
    print_spool_lines(&nginx.logs());
    report.assert_missing_zero();
}

// 3. A topic that does not exist, created later.

#[test]
fn topic_created_later() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("other", 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let conf = conf(
        2,
        "",
        "location = /in { kafka_ingest; kafka_topic $http_topic; kafka_allowed_topics late-*; }",
    );
    let nginx = Nginx::start_conf(&conf, &brokers);
    let load = Load::new(nginx.port, "/in")
        .header("topic", "late-topic")
        .clients(4)
        .rate(Some(100.0))
        .max_events(6_000)
        .start("late-topic");
    load.wait_for(Duration::from_secs(10), |answered, _, _| answered >= 100);
    let (_, accepted_before, _) = load.counts();
    cluster.create_topic("late-topic", 2, 1).unwrap();
    // Missing topics are remembered for 10 s.
    let took = load.wait_for(Duration::from_secs(40), |_, ok, _| ok >= 300);
    let mut ledger = load.stop();
    ledger.read_back(&brokers, &["late-topic"], IDLE, CAP);
    let report = ledger.report("topic-created-later");
    report.print();
    assert_eq!(accepted_before, 0, "accepted before the topic existed");
    assert!(
        took,
        "events were accepted once the topic existed: {}",
        report.line()
    );
    assert!(
        report
            .refusals
            .get("404 unknown_topic")
            .is_some_and(|&n| n >= 100),
        "{}",
        report.line()
    );
    report.assert_missing_zero();
}

// 4. Three reloads and a quit under load.

#[test]
fn reloads_and_quit_under_load() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("reloads", 3, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let dir = spool_dir("reload-spool");
    let conf = conf(
        2,
        &format!("kafka_spool {} fsync=100ms;", dir.0.display()),
        "location = /in { kafka_ingest; kafka_topic reloads; kafka_delivery queued; }",
    );
    let mut nginx = Nginx::start_conf(&conf, &brokers);
    let load = Load::new(nginx.port, "/in")
        .clients(6)
        .rate(Some(300.0))
        .max_events(20_000)
        .start("reloads");
    load.wait_for(Duration::from_secs(10), |_, ok, _| ok >= 300);
    for _ in 0..3 {
        nginx.reload();
        keep_loading(&load, Duration::from_secs(1));
    }
    nginx.quit();
    let mut ledger = load.stop();
    nginx.check_logs();
    ledger.read_back(&brokers, &["reloads"], IDLE, CAP);
    let report = ledger.report("reloads-and-quit");
    report.print();
    print_spool_lines(&nginx.logs());
    report.assert_missing_zero();
}

// 5. A fast stop with the broker down; nginx started again with the broker up.

#[test]
fn fast_stop_with_broker_down_then_restart() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("stopped", 2, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let dir = spool_dir("stop-spool");
    // The default message.timeout.ms (300 s): every event is still queued at the stop.
    let conf = conf(
        2,
        &format!(
            "kafka_spool {} fsync=100ms;\nkafka_flush_timeout 2s;",
            dir.0.display()
        ),
        "location = /in { kafka_ingest; kafka_topic stopped; kafka_delivery queued; }",
    );
    let mut first = Nginx::start_conf(&conf, &brokers);
    let mut ledger = Load::new(first.port, "/in")
        .rate(None)
        .max_events(50)
        .start("stop-warm")
        .join();
    cluster.broker_down(1).unwrap();
    ledger.merge(
        Load::new(first.port, "/in")
            .rate(Some(300.0))
            .max_events(1_000)
            .start("stop-down")
            .join(),
    );
    first.stop_with(libc::SIGTERM);
    first.check_logs();
    let logged = undelivered_payloads(&first.logs()).len();

    cluster.broker_up(1).unwrap();
    let mut second = Nginx::start_conf(&conf, &brokers);
    ledger.read_back(&brokers, &["stopped"], IDLE, CAP);
    second.quit();
    second.check_logs();
    let report = ledger.report("fast-stop-broker-down");
    report.print();
    println!("  failure lines in the first nginx's log: {logged}");
    print_spool_lines(&(first.logs() + &second.logs()));
    report.assert_missing_zero();
}

// 6. A worker SIGKILLed under load.

/// `spool`: the options of `kafka_spool`, if there is one.
fn worker_killed(scenario: &str, delivery: &str, spool: Option<&str>) -> Report {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("killed-worker", 3, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let dir = spool_dir("worker-spool");
    let spool_line = match spool {
        Some(options) => format!("kafka_spool {} {options};", dir.0.display()),
        None => String::new(),
    };
    // linger.ms 200: the worker holds events in memory when it is killed.
    let conf = conf(
        2,
        &format!("{spool_line}\nkafka_option linger.ms 200;"),
        &format!(
            "location = /in {{ kafka_ingest; kafka_topic killed-worker; kafka_delivery {delivery}; }}"
        ),
    );
    let mut nginx = Nginx::start_conf(&conf, &brokers);
    nginx.allowed_marks.push("exited on signal 9".to_string());
    let load = Load::new(nginx.port, "/in")
        .clients(8)
        .rate(Some(300.0))
        .max_events(20_000)
        .start(scenario);
    load.wait_for(Duration::from_secs(10), |_, ok, _| ok >= 300);
    let victim = nginx.workers()[0];
    signal_pid(victim, libc::SIGKILL);
    poll_until("a new worker", Duration::from_secs(10), || {
        let w = nginx.workers();
        w.len() == 2 && !w.contains(&victim)
    });
    keep_loading(&load, Duration::from_secs(2));
    let mut ledger = load.stop();
    ledger.recover_from_log(&nginx.logs());
    ledger.read_back(&brokers, &["killed-worker"], IDLE, CAP);
    nginx.quit();
    nginx.check_logs();
    let report = ledger.report(scenario);
    report.print();
    print_spool_lines(&nginx.logs());
    report
}

#[test]
fn worker_killed_durable() {
    worker_killed("worker-killed-durable", "durable", Some("fsync=100ms")).assert_missing_zero();
}

#[test]
fn worker_killed_durable_fsync_batch() {
    worker_killed(
        "worker-killed-durable-batch",
        "durable",
        Some("fsync=batch"),
    )
    .assert_missing_zero();
}

#[test]
fn worker_killed_acked() {
    worker_killed("worker-killed-acked", "acked", None).assert_missing_zero();
}

/// What `queued` without a spool loses when a worker dies: reported, not asserted.
#[test]
fn worker_killed_queued_loses_what_it_held() {
    let report = worker_killed("worker-killed-queued-no-spool", "queued", None);
    println!(
        "  queued without a spool: {} accepted events lost with the killed worker",
        report.missing.len()
    );
}

// 7. The whole nginx SIGKILLed with the broker down (durable), started again with it up.

#[test]
fn nginx_killed_with_broker_down_durable() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("crashed", 2, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let dir = spool_dir("crash-spool");
    let conf = conf(
        2,
        &format!("kafka_spool {} fsync=100ms;", dir.0.display()),
        "location = /in { kafka_ingest; kafka_topic crashed; kafka_delivery durable; }",
    );
    let mut first = Nginx::start_conf(&conf, &brokers);
    let mut ledger = Load::new(first.port, "/in")
        .rate(None)
        .max_events(50)
        .start("crash-warm")
        .join();
    cluster.broker_down(1).unwrap();
    ledger.merge(
        Load::new(first.port, "/in")
            .rate(Some(300.0))
            .max_events(900)
            .start("crash-down")
            .join(),
    );
    // The master first, so that no worker is started again; then each worker.
    let workers = first.workers();
    first.stop_with(libc::SIGKILL);
    for &w in &workers {
        signal_pid(w, libc::SIGKILL);
    }
    poll_until("the workers to die", Duration::from_secs(10), || {
        workers.iter().all(|&w| gone(w))
    });

    cluster.broker_up(1).unwrap();
    let mut second = Nginx::start_conf(&conf, &brokers);
    ledger.read_back(&brokers, &["crashed"], IDLE, CAP);
    second.quit();
    second.check_logs();
    let report = ledger.report("nginx-killed-durable");
    report.print();
    print_spool_lines(&second.logs());
    report.assert_missing_zero();
}

// 7b. `fsync=batch`: a durable answer waits for a sync of its record.

/// A client that sends one event at a time is answered only after a sync that began once
/// its event was written: at least one sync per event, and each event read back. With a
/// periodic `fsync` the same events share one or two syncs (what makes this test fail
/// without group commit).
#[test]
fn fsync_batch_answers_after_a_sync() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("batch", 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let events = 40;
    let mut read = 0;
    for fsync in ["batch", "1s"] {
        let dir = spool_dir("batch-spool");
        let conf = conf(
            1,
            &format!("kafka_spool {} fsync={fsync};", dir.0.display()),
            "location = /in { kafka_ingest; kafka_topic batch; kafka_delivery durable; }
             location = /metrics { kafka_metrics; }",
        );
        let mut nginx = Nginx::start_conf(&conf, &brokers);
        let mut client = Http::connect(nginx.port);
        let sent: Vec<Vec<u8>> = (0..events)
            .map(|i| format!("{{\"fsync\":\"{fsync}\",\"n\":{i}}}").into_bytes())
            .collect();
        for body in &sent {
            let r = client.post("/in", "batch", body);
            assert_eq!(r.status, 204, "{}", r.text());
        }
        let mut metrics = Exposition::default();
        poll_until("the gauges", Duration::from_secs(10), || {
            metrics = Exposition::parse(&get(nginx.port, "/metrics").text());
            metrics.sum("nginx_kafka_spool_journaled_total", &[]) >= events as f64
        });
        let syncs = metrics.sum("nginx_kafka_spool_syncs_total", &[]);
        let accepted = metrics.sum(
            "nginx_kafka_requests_total",
            &[("location", "/in"), ("result", "accepted")],
        );
        println!("  fsync={fsync}: {events} events one at a time, {syncs} syncs");
        assert_eq!(
            accepted, events as f64,
            "every answered event is counted once"
        );
        if fsync == "batch" {
            assert!(
                syncs >= events as f64,
                "one sync per answer at least: {syncs}"
            );
        } else {
            assert!(
                syncs < events as f64 / 2.0,
                "periodic syncs are shared: {syncs}"
            );
        }
        read += events;
        let got = consume(&brokers, "batch", read, IDLE);
        let values: Vec<Vec<u8>> = got[read - events..]
            .iter()
            .map(|r| r.value.clone())
            .collect();
        assert_eq!(values, sent);
        nginx.quit();
        nginx.check_logs();
    }
}

// 8. A full spool and a read-only spool.

/// Durable events with the broker down until the spool refuses some: `503 spool_full`, a
/// `crit` line, no worker lost; then the broker comes back and every accepted event is
/// delivered.
fn spool_fills(
    scenario: &str,
    nginx: &mut Nginx,
    cluster: &MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    brokers: &str,
) {
    nginx.allowed_marks.push("kafka_spool \"".to_string());
    let workers = nginx.workers();
    let mut ledger = Load::new(nginx.port, "/in")
        .rate(None)
        .max_events(20)
        .start(&format!("{scenario}-warm"))
        .join();
    cluster.broker_down(1).unwrap();
    let load = Load::new(nginx.port, "/in")
        .clients(4)
        .rate(None)
        .pad_max(4_000)
        .max_events(5_000)
        .start(scenario);
    let filled = load.wait_for(Duration::from_secs(60), |_, _, refused| refused >= 100);
    ledger.merge(load.stop());
    let log = nginx.logs();
    assert!(
        filled,
        "the spool refused events: {}",
        ledger.report(scenario).line()
    );
    assert!(
        log.lines()
            .any(|l| l.contains("[crit]") && l.contains("cannot take events")),
        "a crit line says the spool cannot take events:\n{log}"
    );
    assert_eq!(nginx.workers(), workers, "no worker died");

    cluster.broker_up(1).unwrap();
    ledger.read_back(brokers, &["full"], IDLE, CAP);
    // Once what filled it is delivered, the spool has room again.
    let after = Load::new(nginx.port, "/in")
        .rate(Some(10.0))
        .max_events(100)
        .start(&format!("{scenario}-after"));
    after.wait_for(Duration::from_secs(10), |_, ok, _| ok >= 20);
    let after = after.stop();
    let accepted_after = after.accepted();
    let after_sent = after.sent.len();
    ledger.merge(after);
    ledger.read_back(brokers, &["full"], IDLE, CAP);
    assert_eq!(nginx.workers(), workers, "no worker died");
    nginx.quit();
    nginx.check_logs();
    let report = ledger.report(scenario);
    report.print();
    println!("  accepted after the broker came back: {accepted_after} of {after_sent}");
    assert!(
        accepted_after > 0,
        "the spool takes events again once what filled it was delivered: {}",
        report.line()
    );
    assert!(
        report
            .refusals
            .get("503 spool_full")
            .is_some_and(|&n| n > 0),
        "{}",
        report.line()
    );
    report.assert_missing_zero();
}

/// (a) The disk is full: the spool is a 6 MiB tmpfs mounted in a mount namespace of nginx's
/// own (`unshare -m`, which needs root or user namespaces). Journals preallocate 1 MiB
/// each (`max_size` is the default 1g): the disk, not the cap, refuses.
#[test]
fn spool_disk_full_durable() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("full", 2, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let dir = TempDir::new("tmpfs-spool");
    let conf = conf(
        1,
        &format!("kafka_spool {} fsync=100ms;", dir.0.display()),
        "location = /in { kafka_ingest; kafka_topic full; kafka_delivery durable; }",
    );
    let mount = format!(
        "mount -t tmpfs -o size=6m,mode=0777 nginx-kafka-spool {} && exec \"$@\"",
        dir.0.display()
    );
    let mut nginx = Nginx::start_wrapped(
        &[("nginx.conf", &conf)],
        &brokers,
        &[
            "unshare",
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            &mount,
            "sh",
        ],
    );
    spool_fills("spool-disk-full", &mut nginx, &cluster, &brokers);
}

/// (a') The `max_size` cap is reached.
#[test]
fn spool_cap_reached_durable() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("full", 2, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let dir = spool_dir("cap-spool");
    let conf = conf(
        1,
        &format!("kafka_spool {} max_size=512k fsync=100ms;", dir.0.display()),
        "location = /in { kafka_ingest; kafka_topic full; kafka_delivery durable; }",
    );
    let mut nginx = Nginx::start_conf(&conf, &brokers);
    spool_fills("spool-cap-reached", &mut nginx, &cluster, &brokers);
}

/// (b) A spool directory the workers cannot write (mode 0555; the workers run as `nobody`
/// under a root master, so the mode holds for them): durable events are refused
/// `503 spool_full`, said at `crit`, and no worker dies; once the directory is writable
/// again, events are accepted and delivered.
#[test]
fn spool_read_only_durable() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("readonly", 2, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let dir = TempDir::new("ro-spool");
    set_mode(&dir.0, 0o555);
    let conf = conf(
        1,
        &format!("kafka_spool {} fsync=100ms;", dir.0.display()),
        "location = /in { kafka_ingest; kafka_topic readonly; kafka_delivery durable; }",
    );
    let mut nginx = Nginx::start_conf(&conf, &brokers);
    nginx.allowed_marks.push("kafka_spool \"".to_string());
    let workers = nginx.workers();
    for &w in &workers {
        assert_ne!(
            uid_of(w),
            Some(0),
            "workers run as root: a mode cannot make the spool read-only for them"
        );
    }
    let load = Load::new(nginx.port, "/in")
        .clients(4)
        .rate(Some(100.0))
        .max_events(6_000)
        .start("spool-read-only");
    let refused = load.wait_for(Duration::from_secs(20), |_, _, r| r >= 100);
    let (_, accepted_read_only, _) = load.counts();
    set_mode(&dir.0, 0o777);
    let recovered = load.wait_for(Duration::from_secs(30), |_, ok, _| {
        ok >= accepted_read_only + 200
    });
    let mut ledger = load.stop();
    let log = nginx.logs();
    ledger.read_back(&brokers, &["readonly"], IDLE, CAP);
    assert_eq!(nginx.workers(), workers, "no worker died");
    nginx.quit();
    nginx.check_logs();
    let report = ledger.report("spool-read-only");
    report.print();
    println!("  accepted while read-only: {accepted_read_only}");
    assert!(refused, "events were refused: {}", report.line());
    assert!(
        report
            .refusals
            .get("503 spool_full")
            .is_some_and(|&n| n >= 100),
        "{}",
        report.line()
    );
    assert!(
        log.lines()
            .any(|l| l.contains("[crit]") && l.contains("kafka_spool \"")),
        "a crit line names the spool:\n{log}"
    );
    assert!(recovered, "accepted again once writable: {}", report.line());
    report.assert_missing_zero();
}

// 9. A torn and corrupted spool file.

/// nginx spools events with the broker down and quits; a record in the middle of the file
/// gets a flipped byte and the last one is cut short; nginx started again with the broker
/// up replays every other record, and counts one corrupt region and one torn tail.
#[test]
fn torn_and_corrupt_spool_file() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("damaged", 2, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let dir = spool_dir("damaged-spool");
    let conf = conf(
        1,
        &format!(
            "kafka_spool {} fsync=100ms;\n\
             kafka_option message.timeout.ms 1000;\n\
             kafka_flush_timeout 1s;",
            dir.0.display()
        ),
        "location = /in { kafka_ingest; kafka_topic damaged; kafka_delivery queued; }",
    );
    let mut first = Nginx::start_conf(&conf, &brokers);
    cluster.broker_down(1).unwrap();
    let mut ledger = Load::new(first.port, "/in")
        .rate(Some(200.0))
        .max_events(300)
        .start("damaged")
        .join();
    let accepted = ledger.accepted();
    first.quit();
    first.check_logs();

    // Every record, with its file and offset.
    let (_, export, stderr) = kafka_spool(&["export", &dir.0.to_string_lossy()]);
    let records: Vec<serde_json::Value> = export
        .lines()
        .map(|l| serde_json::from_str(l).expect("an export line"))
        .collect();
    assert_eq!(
        records.len(),
        accepted,
        "every accepted event is spooled: {stderr}"
    );
    let file_of = |r: &serde_json::Value| r["file"].as_str().unwrap().to_string();
    let biggest = {
        let mut counts = std::collections::BTreeMap::new();
        for r in &records {
            *counts.entry(file_of(r)).or_insert(0usize) += 1;
        }
        counts.into_iter().max_by_key(|(_, n)| *n).unwrap().0
    };
    let in_file: Vec<&serde_json::Value> =
        records.iter().filter(|r| file_of(r) == biggest).collect();
    assert!(in_file.len() >= 3, "{biggest}: {} records", in_file.len());
    let path = {
        let p = Path::new(&biggest);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            dir.0.join(p)
        }
    };
    let mut bytes = fs::read(&path).unwrap();
    let offset = |r: &serde_json::Value| r["offset"].as_u64().unwrap() as usize;
    let value_id = |r: &serde_json::Value| id_of(r["value"].as_str().unwrap().as_bytes()).unwrap();
    let length_at = |bytes: &[u8], at: usize| {
        u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize
    };
    // A byte of the middle record's value flipped: its checksum fails.
    let middle = in_file[in_file.len() / 2];
    let at = offset(middle);
    let flip = at + 12 + length_at(&bytes, at) - 1;
    bytes[flip] ^= 0x20;
    ledger.exclude(&value_id(middle), "a byte flipped on purpose");
    // The last record cut in the middle of its body: a torn tail.
    let last = in_file[in_file.len() - 1];
    let at = offset(last);
    bytes.truncate(at + 12 + length_at(&bytes, at) / 2);
    ledger.exclude(&value_id(last), "cut short on purpose");
    fs::write(&path, &bytes).unwrap();
    let (_, inspect, _) = kafka_spool(&["inspect", &dir.0.to_string_lossy(), "--json"]);
    let inspect: serde_json::Value = serde_json::from_str(&inspect).expect("inspect --json");
    assert_eq!(inspect["totals"]["corrupt"], 1, "{inspect}");

    cluster.broker_up(1).unwrap();
    let mut second = Nginx::start_conf(&conf, &brokers);
    ledger.read_back(&brokers, &["damaged"], IDLE, CAP);
    second.quit();
    second.check_logs();
    let log = second.logs();
    let report = ledger.report("torn-and-corrupt");
    report.print();
    print_spool_lines(&log);
    report.assert_missing_zero();
    assert_eq!(report.excluded, 2);
    assert_eq!(exit_count(&log, " corrupt regions"), 1, "{log}");
    assert_eq!(exit_count(&log, " torn tails"), 1, "{log}");
}

// 10. The spool tool replays an error log and a spool directory into a fresh cluster.

#[test]
fn kafka_spool_replays_a_log_and_a_spool() {
    let old = MockCluster::new(1).unwrap();
    old.create_topic("moved", 2, 1).unwrap();
    let old_brokers = old.bootstrap_servers();
    old.broker_down(1).unwrap();

    // Without a spool: failures are written to the error log.
    let logging = conf(
        1,
        "kafka_option message.timeout.ms 1000;\nkafka_flush_timeout 1s;",
        "location = /in { kafka_ingest; kafka_topic moved; }",
    );
    let mut first = Nginx::start_conf(&logging, &old_brokers);
    let mut ledger = Load::new(first.port, "/in")
        .rate(Some(300.0))
        .max_events(300)
        .start("cli-log")
        .join();
    let accepted_logged = ledger.accepted();
    poll_until("the failures to be logged", Duration::from_secs(20), || {
        undelivered_payloads(&first.log("error.log")).len() >= accepted_logged
    });
    first.quit();
    first.check_logs();

    // With a spool: failures are spooled.
    let dir = spool_dir("cli-spool");
    let spooling = conf(
        1,
        &format!(
            "kafka_spool {} fsync=100ms;\n\
             kafka_option message.timeout.ms 1000;\n\
             kafka_flush_timeout 1s;",
            dir.0.display()
        ),
        "location = /in { kafka_ingest; kafka_topic moved; }",
    );
    let mut second = Nginx::start_conf(&spooling, &old_brokers);
    ledger.merge(
        Load::new(second.port, "/in")
            .rate(Some(300.0))
            .max_events(300)
            .start("cli-spool")
            .join(),
    );
    second.quit();
    second.check_logs();

    let fresh = MockCluster::new(1).unwrap();
    fresh.create_topic("moved", 3, 1).unwrap();
    let brokers = fresh.bootstrap_servers();
    let error_log = first.prefix.0.join("logs/error.log");
    let (ok, out, err) = kafka_spool(&[
        "replay-log",
        &error_log.to_string_lossy(),
        "--brokers",
        &brokers,
    ]);
    println!("  replay-log: {}", out.trim());
    assert!(ok, "replay-log: {out}\n{err}");
    let (ok, out, err) = kafka_spool(&["replay", &dir.0.to_string_lossy(), "--brokers", &brokers]);
    println!("  replay: {}", out.trim());
    assert!(ok, "replay: {out}\n{err}");

    ledger.read_back(&brokers, &["moved"], IDLE, CAP);
    let report = ledger.report("cli-replay");
    report.print();
    report.assert_missing_zero();
}
