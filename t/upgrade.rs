//! Upgrading the module without dropping events: nginx's binary upgrade. With a new
//! `ngx_http_kafka_module.so` put in place of the old one, USR2 starts a new master (and
//! workers) from the same nginx binary, which loads the module file anew; WINCH makes the
//! old workers finish gracefully (each flushes its producer); QUIT ends the old master.
//! Clients post all along; every event answered 2xx must be in Kafka.
//!
//! nginx ignores USR2 in a master whose parent is still the process that started it (the
//! guard that stops a new binary from upgrading again), so this nginx runs as a daemon.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::ledger::*;
use common::*;
use rdkafka::mocking::MockCluster;

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        if Instant::now() > deadline {
            let ps = Command::new("ps")
                .args(["-eo", "pid,ppid,stat,cmd"])
                .output()
                .unwrap();
            let ps = String::from_utf8_lossy(&ps.stdout);
            let ps: Vec<&str> = ps.lines().filter(|l| l.contains("nginx")).collect();
            panic!("timed out waiting for {what}:\n{}", ps.join("\n"));
        }
        thread::sleep(Duration::from_millis(50));
    }
}

fn read_pid(path: &Path) -> Option<i32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn children_of(parent: i32) -> Vec<i32> {
    let mut pids = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        if fields.get(1).and_then(|p| p.parse::<i32>().ok()) == Some(parent) {
            pids.push(pid);
        }
    }
    pids
}

/// The inodes of `module` that a process has mapped.
fn mapped_inodes(pid: i32, module: &str) -> Vec<u64> {
    fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(module))
        .filter_map(|l| l.split_whitespace().nth(4)?.parse().ok())
        .collect()
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: signals a master of the nginx this test started.
    unsafe { libc::kill(pid, sig) };
}

/// The daemon's masters, quit (then killed) when the test ends however it ends.
struct Masters(Vec<i32>);

impl Drop for Masters {
    fn drop(&mut self) {
        for &pid in &self.0 {
            if !gone(pid) {
                signal(pid, libc::SIGQUIT);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.0.iter().any(|&p| !gone(p)) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
        }
        for &pid in &self.0 {
            if !gone(pid) {
                signal(pid, libc::SIGKILL);
            }
        }
    }
}

#[test]
fn binary_upgrade_loads_the_new_module_and_loses_nothing() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("upgrade", 2, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let modules = TempDir::new("upgrade-modules");
    let module: PathBuf = modules.0.join("ngx_http_kafka_module.so");
    fs::copy(module_path(), &module).unwrap();
    let conf = conf_with("", "location = /in { kafka_ingest; kafka_topic upgrade; }")
        .replace("{module}", module.to_str().unwrap())
        .replace("worker_processes 1;", "worker_processes 2;");
    let (prefix, port) = Nginx::prepare(&[("nginx.conf", &conf)], &brokers);
    let pid_file = prefix.0.join("logs/nginx.pid");
    let oldbin = prefix.0.join("logs/nginx.pid.oldbin");
    let status = Command::new(nginx_bin())
        .arg("-p")
        .arg(&prefix.0)
        .args(["-c", "conf/nginx.conf", "-e", "logs/stderr.log"])
        .stdin(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    wait_for("the pid file", Duration::from_secs(10), || {
        read_pid(&pid_file).is_some()
    });
    let old = read_pid(&pid_file).unwrap();
    let mut masters = Masters(vec![old]);
    wait_for("the old workers", Duration::from_secs(10), || {
        children_of(old).len() == 2
    });
    let old_inode = fs::metadata(&module).unwrap().ino();
    thread::sleep(Duration::from_millis(300));

    let load = Load::new(port, "/in")
        .clients(4)
        .rate(Some(300.0))
        .max_events(20_000)
        .start("upgrade");
    assert!(load.wait_for(Duration::from_secs(10), |_, ok, _| ok >= 300));

    // The new module: another file at the same path (a new inode), as a package upgrade
    // leaves it. (The same build here: what matters is which file each worker maps.)
    let staged = modules.0.join("ngx_http_kafka_module.so.new");
    fs::copy(module_path(), &staged).unwrap();
    fs::rename(&staged, &module).unwrap();
    let new_inode = fs::metadata(&module).unwrap().ino();
    assert_ne!(new_inode, old_inode);

    signal(old, libc::SIGUSR2);
    wait_for("the new master", Duration::from_secs(10), || {
        read_pid(&oldbin) == Some(old) && read_pid(&pid_file).is_some_and(|p| p != old)
    });
    let new = read_pid(&pid_file).unwrap();
    masters.0.push(new);
    let maps_only = |pid: i32, inode: u64| {
        let inodes = mapped_inodes(pid, "ngx_http_kafka_module.so");
        !inodes.is_empty() && inodes.iter().all(|&i| i == inode)
    };
    wait_for(
        "the new workers, on the new module",
        Duration::from_secs(10),
        || {
            let workers = children_of(new);
            workers.len() == 2 && workers.iter().all(|&w| maps_only(w, new_inode))
        },
    );
    assert!(
        maps_only(new, new_inode),
        "the new master loaded the new file"
    );
    // The new master is a child of the old one too.
    let old_workers =
        || -> Vec<i32> { children_of(old).into_iter().filter(|&p| p != new).collect() };
    assert_eq!(old_workers().len(), 2);
    for w in old_workers().into_iter().chain([old]) {
        assert!(
            maps_only(w, old_inode),
            "the old generation keeps the old file"
        );
    }
    let before = load.counts().1;
    assert!(load.wait_for(Duration::from_secs(10), |_, ok, _| ok >= before + 300));

    // The old workers finish what they took and exit; the new ones serve.
    signal(old, libc::SIGWINCH);
    wait_for("the old workers to exit", Duration::from_secs(30), || {
        old_workers().is_empty()
    });
    let before = load.counts().1;
    assert!(load.wait_for(Duration::from_secs(10), |_, ok, _| ok >= before + 300));
    signal(old, libc::SIGQUIT);
    wait_for("the old master to exit", Duration::from_secs(30), || {
        gone(old)
    });
    let before = load.counts().1;
    assert!(load.wait_for(Duration::from_secs(10), |_, ok, _| ok >= before + 300));

    let mut ledger = load.stop();
    ledger.read_back(
        &brokers,
        &["upgrade"],
        Duration::from_secs(5),
        Duration::from_secs(60),
    );
    drop(masters);
    let logs = fs::read_to_string(prefix.0.join("logs/error.log")).unwrap_or_default();
    for line in logs.lines() {
        assert!(!FATAL_MARKS.iter().any(|m| line.contains(m)), "{line}");
    }
    let report = ledger.report("binary-upgrade");
    report.print();
    report.assert_missing_zero();
    assert_eq!(ledger.refused(), 0, "{}", report.line());
    // Both generations said how their producers ended: the old workers delivered what they
    // took (nothing left to log), and so did the new ones at the final quit.
    assert_eq!(logs.matches("kafka: producer stopped").count(), 4, "{logs}");
    assert_eq!(exit_counts(&logs).1, 0, "{logs}");
}
