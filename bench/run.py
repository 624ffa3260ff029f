#!/usr/bin/env python3
"""The benchmark: this module side by side with nginx's own ceiling and the original
OpenResty/Lua collector, on one nginx binary (Debian's /usr/sbin/nginx), one server, one
location each (bench/nginx.conf.in); in the headline cell, the vendored nginx too
(`ceiling-1.28`, `module-1.28`, without Lua); in full runs (or with --sweeps), body sizes and
connection counts; and bench/callgrind.py's instructions per request.

Every run starts a fresh nginx, warms it up, loads it with wrk on loopback for a fixed time,
stops it gracefully (the module flushes), then counts what nginx answered (its access log) and
what reached the broker (the topic's watermarks, plus a byte-for-byte read-back of what the
broker retains). Rounds alternate the contestants; figures are medians over rounds, and
speeds are reported as ratios to the ceiling measured in the same run.

In the headline cell (1 worker, postdata.json) two more contestants measure the module's
metrics: `module+metrics`, the module with a `kafka_metrics` location in the server (so its
counters are on), and `module+scrape`, the same with bench/scrape.py reading that location 10
times a second during the load. --no-metrics leaves them out (a module without the directive).

Two more measure its delivery modes there: `module+spool` (queued, as `module`, with a
`kafka_spool` in the run's directory) and `module+durable` (`kafka_delivery durable`: each event
appended to the worker's journal before the answer, fsync=1s). Then `module+acked` (the answer
waits for the broker's acknowledgement) at 64 and 512 connections, and the replay: a spool of
1,000,000 events (100,000 with --quick), filled while the broker is down, drained by a fresh
nginx once a broker is up again. --no-delivery leaves all of these out.

Then the batch path of `kafka_collect` (`collect`): 1 worker, POSTs of 100 events of about 200
bytes each (one JSON array, as kc.js sends them), every event one Kafka message; events per
second into Kafka, and every event read back against the batch's. The report gives kc.js's
size, gzipped. --no-collect leaves it out (a module without kafka_collect).

Usage: bench/run.py [--quick] [--sweeps] [--no-metrics] [--no-delivery] [--no-collect]
       [--out bench/results]
       [--render RUN.json]
`make bench` (or `make bench QUICK=1`) installs what this needs and builds the module first.
"""

import argparse
import datetime
import http.client
import json
import os
import platform
import pwd
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
NGINX = Path(os.environ.get("BENCH_NGINX", "/usr/sbin/nginx"))
MODULE = Path(os.environ.get("BENCH_MODULE", REPO / "build/debian/ngx_http_kafka_module.so"))
BIN = REPO / "build/bin"
# The vendored nginx (1.28, what `make run` and the tests use) and the module built for it:
# its own ceiling and module, in the headline cell's rounds, without Lua (Debian's Lua
# module is built for Debian's nginx only).
VENDORED_NGINX = REPO / "build/sbin/nginx"
VENDORED_MODULE = REPO / "build/modules/ngx_http_kafka_module.so"
VENDORED_CONTESTANTS = ("ceiling-1.28", "module-1.28")
CONTESTANTS = ("ceiling", "module", "lua")
# Headline cell only: the module with its counters on, unscraped and scraped. Both load /module;
# `module` itself has no kafka_metrics anywhere, so its counters are off.
METRICS_CONTESTANTS = ("module+metrics", "module+scrape")
ALL_CONTESTANTS = CONTESTANTS + METRICS_CONTESTANTS
LOCATIONS = {"module+metrics": "/module", "module+scrape": "/module"}
METRICS_LOCATION = """        location = /metrics {
            kafka_metrics;
            access_log logs/metrics.log bench;
        }"""
SCRAPE_HZ = 10
# Headline cell only, alternating with the others: the module queued with a spool, and durable.
DELIVERY_CONTESTANTS = ("module+spool", "module+durable", "module+batch")
# Its own runs: acknowledged delivery, at these numbers of connections.
ACKED = "module+acked"
ACKED_CONNECTIONS = (64, 512)
ALL_CONTESTANTS += DELIVERY_CONTESTANTS + (ACKED,) + VENDORED_CONTESTANTS
LOCATIONS.update({"ceiling-1.28": "/ceiling", "module-1.28": "/module"})
# The sweeps (full runs): ceiling and module, 1 worker, one round each.
SWEEP_BODIES = (64, 512, 2048, 16384, 65536)
SWEEP_CONNECTIONS = (64, 1000, 10000)
# The linger sweep: at a tenth of the ceiling's rate, where batches are small and a batch's
# own cost (LZ4 context, buffers, a request) is spread over few events, CPU per request for
# each linger.ms, the ceiling paced alike for reference.
SWEEP_LINGER_MS = (0, 5, 20, 50)
SWEEP_LINGER_RATE = 0.1
LOCATIONS.update({"module+spool": "/module", "module+durable": "/durable",
                  "module+batch": "/durable",
                  "module+acked": "/acked"})
# Contestants whose nginx has a kafka_spool (in its prefix: spool/), and their parameters.
SPOOLED = {"module+spool": "", "module+durable": "", "module+batch": "fsync=batch"}
DELIVERY_LOCATION = """        location = /{mode} {{
            kafka_ingest;
            kafka_topic $http_topic;
            kafka_allowed_topics bench-*;
            kafka_delivery {mode};
        }}"""
# The replay: the fill's producer gives up on a message after this long (the broker is down),
# so what it queued lands in the spool soon after the load; the drain replays at this rate.
REPLAY_FILL_TIMEOUT_MS = 1000
REPLAY_RATE = 1_000_000
# The batch path of kafka_collect: its own runs, one registered site, 100 events per POST.
COLLECT = "collect"
COLLECT_KEY = "0123456789abcdef0123456789abcdef"
COLLECT_ORIGIN = "https://shop.example"
BATCH_EVENTS = 100
# Fewer connections than the other runs: each carries 20 kB a request, and past what the
# producer drains, more connections only add 503s (the queue has no room for a whole batch).
COLLECT_CONNECTIONS = 16
LOCATIONS[COLLECT] = f"/collect?key={COLLECT_KEY}"
COLLECT_SITES = ('{"sites": [{"id": "bench", "keys": ["%s"], "domains": ["shop.example"]}]}\n'
                 % COLLECT_KEY)
COLLECT_LOCATION = """        location = /collect {
            client_body_buffer_size 64k;
            kafka_collect;
            kafka_topic $http_topic;
        }"""
# The module's producer settings, as in nginx/nginx.conf; a sweep run replaces one of them.
PRODUCER_OPTIONS = {"linger.ms": "20", "compression.type": "lz4"}
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


class Settings:
    """How long and how hard; --quick trades rounds for time (about 2 minutes)."""

    def __init__(self, quick):
        self.quick = quick
        self.rounds = 1 if quick else 5
        self.warmup = 1 if quick else 2
        self.duration = 3 if quick else 10
        self.paced_rounds = 1 if quick else 3
        self.paced_duration = 4 if quick else 10
        self.soak = 12 if quick else 60
        self.soak_sample = 2 if quick else 5
        self.sweep = not quick
        self.sweep_duration = 8
        self.linger_rounds = 1 if quick else 3
        self.acked_rounds = 1 if quick else 3
        self.replay_events = 100_000 if quick else 1_000_000
        self.collect_rounds = 1 if quick else 3


def log(message):
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listen(port, proc, what, timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited at start ({proc.returncode})")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"{what} does not listen on {port}")


def pinned(cpu, argv):
    """argv run on one CPU, when the machine has at least two."""
    if cpu is None or os.cpu_count() < 2 or not shutil.which("taskset"):
        return argv
    return ["taskset", "-c", str(cpu)] + argv


class Broker:
    """build/bin/kafka-dev-broker: librdkafka's mock cluster, on CPU 1 beside wrk. It keeps
    every message in memory, so each run gets a fresh one."""

    def __init__(self, workdir, topic):
        self.port = free_port()
        self.log_path = workdir / "broker.log"
        self.log_file = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            # The module never creates topics: the run's topic exists up front, with the
            # mock cluster's default of 4 partitions.
            pinned(1, [str(BIN / "kafka-dev-broker"), "--port", str(self.port),
                       "--topic", f"{topic}:4"]),
            stdout=self.log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_listen(self.port, self.proc, "kafka-dev-broker")
        deadline = time.time() + 5
        self.upstream_port = None
        while self.upstream_port is None and time.time() < deadline:
            m = re.search(r"mock cluster at [^:]+:(\d+)", self.log_path.read_text())
            self.upstream_port = int(m.group(1)) if m else None
            time.sleep(0.05)
        self.address = f"127.0.0.1:{self.port}"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log_file.close()

    def tally(self, topic, expect=None, lines=False):
        """kafka-tally: the topic's watermarks, and with expect (a file) the read-back: each
        message equal to the file, or with lines to one of its lines."""
        flag = "--expect-lines" if lines else "--expect"
        out = subprocess.run(
            [str(BIN / "kafka-tally"), "--brokers", self.address, "--topic", topic,
             "--timeout-ms", "15000"] + ([flag, str(expect)] if expect else []),
            capture_output=True, text=True, timeout=300)
        if out.returncode != 0:
            raise RuntimeError(f"kafka-tally {topic}: {out.stderr.strip()}")
        return json.loads(out.stdout)

    def bytes_received(self):
        """Bytes acknowledged on every connection to the mock broker (what producers sent)."""
        if not self.upstream_port or not shutil.which("ss"):
            return None
        out = subprocess.run(["ss", "-tinH", "state", "established",
                              f"( dport = :{self.upstream_port} )"],
                             capture_output=True, text=True).stdout
        return sum(int(n) for n in re.findall(r"bytes_acked:(\d+)", out))


def worker_user():
    """Whom nginx's workers run as: bench/nginx.conf.in has no `user`, so as root they run as
    the user nginx was built with (`--user=`, else nobody), otherwise as ourselves."""
    if os.geteuid() != 0:
        return None
    flags = subprocess.run([str(NGINX), "-V"], capture_output=True, text=True).stderr
    m = re.search(r"--user=(\S+)", flags)
    try:
        return pwd.getpwnam(m.group(1) if m else "nobody")
    except KeyError:
        return None


def spool_dir(path):
    """A spool directory the workers can write."""
    path.mkdir(parents=True, exist_ok=True)
    user = worker_user()
    if user:
        os.chown(path, user.pw_uid, user.pw_gid)
    return path


def spool_files(path):
    """The spool directory's files (not the dot-named ones being created): names and bytes."""
    files = {}
    try:
        for entry in os.scandir(path):
            if not entry.name.startswith("."):
                try:
                    files[entry.name] = entry.stat().st_size
                except OSError:
                    pass
    except OSError:
        pass
    return files


def spool_inspect(path):
    """kafka-spool inspect's totals for the directory, or None without the tool."""
    tool = BIN / "kafka-spool"
    if not tool.exists():
        return None
    out = subprocess.run([str(tool), "inspect", str(path), "--json"], capture_output=True,
                         text=True, timeout=300)
    try:
        return json.loads(out.stdout)["totals"]
    except (ValueError, KeyError):
        return {"error": (out.stderr or out.stdout).strip()[-300:]}


def write_conf(prefix, broker_port, port, workers, options=(), metrics=False, spool=None,
               delivery=None, collect=False, vendored=False):
    """bench/nginx.conf.in filled in, in a fresh prefix; with metrics, the /metrics location;
    with spool (a directory and the directive's parameters), a kafka_spool; with delivery
    (durable or acked), that location; with collect, a site registry and /collect."""
    (prefix / "conf").mkdir()
    (prefix / "logs").mkdir()
    os.chmod(prefix, 0o755)
    lua = (BENCH / "send2kafka.lua").read_text()
    lua = lua.replace("@BROKER_HOST@", "127.0.0.1").replace("@BROKER_PORT@", str(broker_port))
    (prefix / "send2kafka.lua").write_text(lua)
    conf = (BENCH / "nginx.conf.in").read_text()
    if vendored:
        # No Lua: neither its modules nor its location.
        conf = re.sub(r"load_module /usr/lib/nginx/modules/\S+;\n", "", conf)
        conf = re.sub(r"        # 3\. The original OpenResty.*?\n        }\n", "", conf,
                      flags=re.S)
    affinity = "worker_cpu_affinity 01;" if workers == 1 and os.cpu_count() >= 2 else ""
    merged = dict(PRODUCER_OPTIONS, **dict(options))
    opts = "\n".join(f"    kafka_option {k} {v};" for k, v in merged.items())
    for name, value in (("@MODULE@", str(VENDORED_MODULE if vendored else MODULE)),
                        ("@WORKERS@", str(workers)),
                        ("@AFFINITY@", affinity), ("@BROKERS@", f"127.0.0.1:{broker_port}"),
                        ("@KAFKA_OPTIONS@", opts), ("@PORT@", str(port)),
                        ("@PREFIX@", str(prefix)),
                        ("@METRICS@", METRICS_LOCATION if metrics else ""),
                        ("@SPOOL@", "    " + " ".join(filter(None, ("kafka_spool",) + spool))
                         + ";" if spool else ""),
                        ("@DELIVERY@", DELIVERY_LOCATION.format(mode=delivery)
                         if delivery else ""),
                        ("@SITES@", f"    kafka_sites {prefix}/conf/sites.json;"
                         if collect else ""),
                        ("@COLLECT@", COLLECT_LOCATION if collect else "")):
        conf = conf.replace(name, value)
    (prefix / "conf/nginx.conf").write_text(conf)
    if collect:
        (prefix / "conf/sites.json").write_text(COLLECT_SITES)


def spool_summary(errors, path):
    """What a spool nginx said at exit (each worker's `kafka: spool` notice, summed) and what
    its directory still holds."""
    out = {"journaled": 0, "spooled": 0, "replayed": 0, "dead": 0, "adopted": 0}
    for m in re.finditer(r"kafka: spool \"[^\"]*\": (\d+) journaled, (\d+) spooled, "
                         r"(\d+) replayed, (\d+) dead-lettered, (\d+) files adopted", errors):
        for key, n in zip(out, m.groups()):
            out[key] += int(n)
    files = spool_files(path)
    out["left_files"] = len(files)
    out["left_bytes"] = sum(files.values())
    return out


def post(port, path, body, topic):
    """One POST of body to path: its status."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", path, body=body.read_bytes(),
                     headers={"Content-Type": "application/json", "topic": topic})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def check_config(what, hint, spool=False, **conf):
    """nginx -t on a contestant's configuration (write_conf's keyword arguments), so that a
    module without its directives stops the bench here, not after minutes of rounds."""
    with tempfile.TemporaryDirectory(prefix="nginx-kafka-bench-check-") as tmp:
        if spool:
            conf["spool"] = (str(spool_dir(Path(tmp) / "spool")), "")
        write_conf(Path(tmp), free_port(), free_port(), 1, **conf)
        out = subprocess.run([str(NGINX), "-t", "-p", tmp, "-c", "conf/nginx.conf",
                              "-e", "logs/stderr.log"], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"bench: the {what} configuration fails nginx -t ({hint}):\n"
                 f"{out.stderr.strip()}")


def check_delivery_config():
    """The delivery contestants: durable (with a spool) and acked."""
    for delivery in ("durable", "acked"):
        check_config(f"module+{delivery}", "a module without kafka_delivery or kafka_spool? "
                     "--no-delivery leaves them out", spool=True, delivery=delivery)


def check_collect_config():
    check_config("collect", "a module without kafka_collect? --no-collect leaves it out",
                 collect=True)


def check_metrics_config():
    check_config("metrics contestants'", "a module without kafka_metrics? --no-metrics "
                 "leaves them out", metrics=True)


class Nginx:
    """A fresh Debian nginx in its own prefix, our child, with the benchmark configuration."""

    def __init__(self, workdir, broker, workers, options=(), tag="run", metrics=False,
                 spool=None, delivery=None, collect=False, vendored=False):
        """spool: the kafka_spool parameters (in the prefix's spool/), or a directory and
        parameters; delivery: durable or acked, for that location."""
        self.prefix = Path(tempfile.mkdtemp(prefix=f"{tag}-", dir=workdir))
        self.port = free_port()
        self.workers_wanted = workers
        if isinstance(spool, str):
            spool = (self.prefix / "spool", spool)
        self.spool = spool_dir(spool[0]) if spool else None
        write_conf(self.prefix, broker.port, self.port, workers, options, metrics,
                   (str(self.spool), spool[1]) if spool else None, delivery, collect, vendored)
        self.proc = subprocess.Popen(
            [str(VENDORED_NGINX if vendored else NGINX), "-p", str(self.prefix), "-c", "conf/nginx.conf",
             "-e", "logs/stderr.log", "-g", "daemon off;"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_listen(self.port, self.proc, "nginx")
        deadline = time.time() + 10
        while time.time() < deadline:
            started = self.error_log().count("kafka: producer started")
            if len(self.workers()) == workers and started >= workers:
                break
            time.sleep(0.05)
        else:
            raise RuntimeError(f"nginx workers did not start:\n{self.error_log()}")

    def workers(self):
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) == self.proc.pid:
                pids.append(int(entry))
        return sorted(pids)

    def cpu_seconds(self):
        """User + system time of the workers, librdkafka's threads included."""
        total = 0
        for pid in self.workers():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])
        return total / CLK_TCK

    def thread_seconds(self):
        """User + system time of the workers' own threads (nginx's event loops) and of their
        other threads (librdkafka's, the module's helpers), apart."""
        main = other = 0
        for pid in self.workers():
            for task in Path(f"/proc/{pid}/task").glob("*"):
                try:
                    fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                ticks = int(fields[11]) + int(fields[12])
                if task.name == str(pid):
                    main += ticks
                else:
                    other += ticks
        return main / CLK_TCK, other / CLK_TCK

    def rss_kb(self):
        """Resident memory of the workers, summed."""
        total = 0
        for pid in self.workers():
            try:
                pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
            except OSError:
                continue
            total += pages * PAGE_KB
        return total

    def error_log(self):
        try:
            return (self.prefix / "logs/error.log").read_text(errors="replace")
        except OSError:
            return ""

    def quit(self, timeout=60):
        """Graceful stop (QUIT): the module flushes what it queued before the worker exits."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def statuses(self, log="access.log"):
        counts = {}
        try:
            with open(self.prefix / "logs" / log) as f:
                for line in f:
                    status = line.strip()
                    counts[status] = counts.get(status, 0) + 1
        except OSError:
            pass
        return counts

    def remove(self):
        shutil.rmtree(self.prefix, ignore_errors=True)


def wrk_command(port, path, body, topic, connections, threads, seconds, cpu=None,
                delay_ms=None, requests=None, origin=None):
    """The wrk command line and environment for one load; with requests (one thread), wrk
    exits after that many responses (bench/wrk-count.lua), or after seconds; with origin,
    requests carry that Origin header."""
    env = dict(os.environ, BENCH_BODY=str(body), BENCH_TOPIC=topic)
    if origin:
        env["BENCH_ORIGIN"] = origin
    if delay_ms is not None:
        env["BENCH_DELAY_MS"] = str(delay_ms)
    script = "wrk.lua"
    if requests is not None:
        env.update(BENCH_REQUESTS=str(requests), BENCH_SCRIPTS=str(BENCH))
        script = "wrk-count.lua"
    argv = pinned(cpu, ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s",
                        "--timeout", "5s", "-s", str(BENCH / script),
                        f"http://127.0.0.1:{port}{path}"])
    return argv, env


def wrk_result(out, err):
    for line in out.splitlines():
        if line.startswith("BENCH "):
            return json.loads(line[6:])
    raise RuntimeError(f"wrk printed no result:\n{out}\n{err}")


def wrk(port, path, body, topic, connections, threads, seconds, cpu=None, delay_ms=None,
        origin=None):
    argv, env = wrk_command(port, path, body, topic, connections, threads, seconds, cpu,
                            delay_ms, origin=origin)
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=seconds + 60)
    return wrk_result(out.stdout, out.stderr)


def start_scraper(port, seconds, cpu=None):
    """bench/scrape.py on its own connection, SCRAPE_HZ a second for the load window, on
    wrk's CPU."""
    argv = pinned(cpu, [sys.executable, str(BENCH / "scrape.py"), "--port", str(port),
                        "--path", "/metrics", "--rate", str(SCRAPE_HZ),
                        "--seconds", str(seconds)])
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)


def scraper_result(proc, seconds):
    try:
        out, err = proc.communicate(timeout=seconds + 30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    for line in out.splitlines():
        if line.startswith("SCRAPE "):
            return json.loads(line[7:])
    # A scraper that died counts every scrape it owed as failed.
    owed = int(SCRAPE_HZ * seconds)
    return {"attempts": owed, "ok": 0, "failed": owed, "skipped": 0,
            "reasons": {f"scraper exited {proc.returncode}: {err.strip()[-200:]}": owed}}


def read_counters(port):
    """The module's own counts after the load, from its endpoint, summed over locations and
    topics: requests by result, and every other nginx_kafka_*_total counter."""
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        text = resp.read().decode("utf-8", "replace")
        conn.close()
    except (OSError, http.client.HTTPException) as e:
        return {"error": type(e).__name__}
    if resp.status != 200:
        return {"error": f"status {resp.status}"}
    totals = {}
    for line in text.splitlines():
        m = re.fullmatch(r"nginx_kafka_(\w+_total)(\{.*\})?\s+(\S+)(\s+-?\d+)?", line)
        if not m:
            continue
        name = m.group(1)
        if name == "requests_total":
            result = re.search(r'result="([^"]*)"', m.group(2) or "")
            name = f"requests_{result.group(1) if result else 'total'}"
        try:
            totals[name] = totals.get(name, 0) + int(float(m.group(3)))
        except ValueError:
            continue
    return totals


class Runner:
    def __init__(self, settings, workdir, bodies):
        self.s = settings
        self.workdir = workdir
        self.broker = None
        self.bodies = bodies
        self.run_id = time.strftime("%Y%m%d%H%M%S")
        self.seq = 0

    def load(self, workers):
        """wrk's shape: with one worker, one wrk thread on the other CPU."""
        if workers == 1:
            return dict(connections=64, threads=1, cpu=1)
        return dict(connections=128, threads=2, cpu=None)

    def run(self, contestant, workers, body_name, seconds, options=(), delay_ms=None,
            connections=None, soak_sample=None):
        self.seq += 1
        topic = f"bench-{self.run_id}-{self.seq}-{contestant.replace('+', '-')}"
        body = self.bodies[body_name]
        shape = self.load(workers)
        if connections:
            shape["connections"] = connections
        self.broker = Broker(self.workdir, topic)
        try:
            return self.measure(contestant, workers, body_name, body, topic, shape, seconds,
                                options, delay_ms, soak_sample)
        finally:
            self.broker.stop()

    def measure(self, contestant, workers, body_name, body, topic, shape, seconds, options,
                delay_ms, soak_sample):
        metrics = contestant in METRICS_CONTESTANTS
        delivery = {"module+durable": "durable", "module+batch": "durable",
                    ACKED: "acked"}.get(contestant)
        collect = contestant == COLLECT
        origin = COLLECT_ORIGIN if collect else None
        nginx = Nginx(self.workdir, self.broker, workers, options,
                      tag=contestant.replace("+", "-"), metrics=metrics,
                      spool=SPOOLED.get(contestant), delivery=delivery, collect=collect,
                      vendored=contestant in VENDORED_CONTESTANTS)
        result = {"contestant": contestant, "workers": workers, "body": body_name,
                  "body_bytes": body.stat().st_size, "topic": topic,
                  "connections": shape["connections"], "options": dict(options)}
        try:
            result["rss_kb_start"] = nginx.rss_kb()
            path = LOCATIONS.get(contestant, f"/{contestant}")
            wrk(nginx.port, path, body, topic, shape["connections"], shape["threads"],
                self.s.warmup, shape["cpu"], delay_ms, origin)
            result["rss_kb_before"] = nginx.rss_kb()
            sent_before = self.broker.bytes_received()
            cpu0 = nginx.cpu_seconds()
            threads0 = nginx.thread_seconds()
            samples = []
            if soak_sample:
                w = self.soak_wrk(nginx, path, body, topic, shape, seconds, soak_sample, samples)
            else:
                scraper = (start_scraper(nginx.port, seconds, shape["cpu"])
                           if contestant == "module+scrape" else None)
                try:
                    w = wrk(nginx.port, path, body, topic, shape["connections"],
                            shape["threads"], seconds, shape["cpu"], delay_ms, origin)
                finally:
                    if scraper:
                        result["scrape"] = scraper_result(scraper, seconds)
            cpu1 = nginx.cpu_seconds()
            threads1 = nginx.thread_seconds()
            result["rss_kb_after"] = nginx.rss_kb()
            sent_after = self.broker.bytes_received()
            if samples:
                result["rss_kb_samples"] = samples
            if metrics:
                # After the measured window: the module's own count, to hold against the
                # access log's below.
                result["counters"] = read_counters(nginx.port)
        finally:
            nginx.quit()
        requests = w["requests"]
        seconds_run = w["duration_us"] / 1e6
        statuses = nginx.statuses()
        result.update({
            "requests": requests,
            "rps": round(requests / seconds_run, 1),
            "p50_ms": w["p50_us"] / 1000, "p90_ms": w["p90_us"] / 1000,
            "p99_ms": w["p99_us"] / 1000, "p999_ms": w["p999_us"] / 1000,
            "max_ms": w["max_us"] / 1000,
            "wrk_non_2xx": w["non_2xx_3xx"],
            "socket_errors": w["connect_errors"] + w["read_errors"] + w["write_errors"]
            + w["timeouts"],
            "cpu_ms_per_10k": round((cpu1 - cpu0) * 1000 / max(requests, 1) * 10000, 1),
            # Of which the workers' other threads (librdkafka's): CPU that may run elsewhere.
            "other_threads_cpu_ms_per_10k": round((threads1[1] - threads0[1]) * 1000
                                                  / max(requests, 1) * 10000, 1),
            # Requests per second of worker CPU: what one core would serve at this cost.
            "rps_per_core": round(requests / (cpu1 - cpu0)) if cpu1 > cpu0 else None,
            "statuses": statuses,
            "answered": sum(statuses.values()),
            "answered_2xx": sum(n for s, n in statuses.items() if s.startswith("2")),
        })
        if metrics:
            # The scraper's GETs and the read above, as nginx logged them.
            result["metrics_log"] = nginx.statuses("metrics.log")
        if (sent_before is not None and sent_after is not None
                and contestant.startswith("module")):
            result["broker_bytes_per_event"] = round((sent_after - sent_before)
                                                     / max(requests, 1), 1)
        errors = nginx.error_log()
        result["error_log_lines"] = {lvl: errors.count(f"[{lvl}]")
                                     for lvl in ("alert", "crit", "error", "warn")}
        # The Lua script's error_handle writes "Error handle: ..." for each failed batch.
        result["lua_error_handler_lines"] = errors.count("Error handle:")
        result["lua_aborted_lines"] = errors.count("lua entry thread aborted")
        m = re.findall(r"kafka: producer stopped: .*?(\d+) delivered, (\d+) not delivered", errors)
        if m:
            result["module_delivered"] = sum(int(d) for d, _ in m)
            result["module_not_delivered"] = sum(int(f) for _, f in m)
        if nginx.spool:
            result["spool"] = spool_summary(errors, nginx.spool)
        if contestant.startswith("ceiling"):
            result["delivered"] = 0
            result["verified"] = 0
        else:
            t = (self.broker.tally(topic, self.bodies[f"{body_name}.lines"], lines=True)
                 if collect else self.broker.tally(topic, body))
            result["delivered"] = t["appended"]
            result["verified"] = t["equal"]
            result["verified_different"] = t["different"]
            result["retained"] = t["retained"]
        result["fatal_lines"] = [line for line in errors.splitlines()
                                 if "[alert]" in line or "[crit]" in line][:5]
        if collect:
            # Each 2xx answer took the whole batch (a batch is all or nothing).
            result["events_per_request"] = BATCH_EVENTS
            result["events_accepted"] = result["answered_2xx"] * BATCH_EVENTS
            # Into Kafka: the events of the window's 2xx answers, per second.
            result["events_per_s"] = round((requests - w["non_2xx_3xx"]) * BATCH_EVENTS
                                           / seconds_run)
        nginx.remove()
        log(f"{contestant:14} w={workers} {body_name:9} {result['rps']:>9.0f} req/s "
            f"p50 {result['p50_ms']:.2f} ms p99 {result['p99_ms']:.2f} ms "
            f"cpu {result['cpu_ms_per_10k']} ms/10k 2xx {result['answered_2xx']} "
            f"delivered {result['delivered']} rss {result['rss_kb_after']} kB"
            + (f" scrapes {result['scrape']['ok']} ok {result['scrape']['failed']} failed"
               if "scrape" in result else "")
            + (f" counted {result['counters'].get('requests_accepted')} accepted"
               if "counters" in result else "")
            + (f" non-2xx {result['answered'] - result['answered_2xx']}"
               if result["answered"] != result["answered_2xx"] else "")
            + (f" spool: {result['spool']['journaled']} journaled, "
               f"{result['spool']['spooled']} spooled, {result['spool']['left_files']} files "
               f"({result['spool']['left_bytes']} B) left" if "spool" in result else ""))
        return result

    def replay(self, events):
        """The spool's replay rate. Fill: nginx (queued, with a kafka_spool) learns the topic
        from a broker, the broker stops, and wrk posts `events` events at full speed: what the
        producer cannot queue goes to the spool at once, what it queued fails after
        REPLAY_FILL_TIMEOUT_MS and goes there too. Drain: a fresh broker with the topic and a
        fresh nginx on the same directory with replay_rate=REPLAY_RATE; the clock runs from
        that nginx's start until the topic holds every spooled event and the directory is
        empty. The directory and both prefixes stay in the workdir if it never gets there."""
        self.seq += 1
        topic = f"bench-{self.run_id}-{self.seq}-replay"
        body = self.bodies["postdata"]
        spool = spool_dir(self.workdir / "replay-spool")
        shape = self.load(1)
        out = {"events_posted": events, "topic": topic, "spool_dir": str(spool),
               "fill_message_timeout_ms": REPLAY_FILL_TIMEOUT_MS, "replay_rate": REPLAY_RATE}

        self.broker = Broker(self.workdir, topic)
        fill = Nginx(self.workdir, self.broker, 1,
                     [("message.timeout.ms", str(REPLAY_FILL_TIMEOUT_MS))], tag="replay-fill",
                     spool=(spool, ""))
        try:
            # One event while the broker is up: the worker knows the topic before it goes.
            first = post(fill.port, "/module", body, topic)
            deadline = time.time() + 10
            while self.broker.tally(topic)["appended"] < 1 and time.time() < deadline:
                time.sleep(0.1)
            out["before_outage"] = {"status": first,
                                    "delivered": self.broker.tally(topic)["appended"]}
            self.broker.stop()
            # At full speed; wrk exits at `events` responses, or after the time a slow
            # 5,000 a second would take.
            argv, env = wrk_command(fill.port, "/module", body, topic, shape["connections"],
                                    1, max(30, events // 5_000), shape["cpu"],
                                    requests=events)
            t0 = time.time()
            w = subprocess.run(argv, env=env, capture_output=True, text=True,
                               timeout=max(30, events // 5_000) + 60)
            out["fill_s"] = round(time.time() - t0, 2)
            if "BENCH-COUNT " not in w.stdout:
                out["fill_wrk"] = (w.stdout + w.stderr).strip()[-500:]
            # What the producer still holds fails after message.timeout.ms and is spooled.
            time.sleep(REPLAY_FILL_TIMEOUT_MS / 1000 + 1)
        finally:
            fill.quit()
        statuses = fill.statuses()
        errors = fill.error_log()
        answered_2xx = sum(n for s, n in statuses.items() if s.startswith("2"))
        # The first event reached the broker that went; the rest must all be in the spool.
        expected = answered_2xx - (1 if out["before_outage"]["delivered"] >= 1 else 0)
        out.update({
            "fill_rps": round(sum(statuses.values()) / out["fill_s"], 1),
            "fill_statuses": statuses, "fill_answered_2xx": answered_2xx,
            "expected": expected, "fill_spool": spool_summary(errors, spool),
            "fill_error_log_lines": {lvl: errors.count(f"[{lvl}]")
                                     for lvl in ("alert", "crit", "error", "warn")},
            "fill_fatal_lines": [line for line in errors.splitlines()
                                 if "[alert]" in line or "[crit]" in line][:5],
        })
        inspected = spool_inspect(spool)
        if inspected is not None:
            out["spool_inspect"] = inspected
        files = spool_files(spool)
        out["spool_files"] = len(files)
        out["spool_bytes"] = sum(files.values())
        log(f"replay fill: {answered_2xx} answered 2xx at {out['fill_rps']:.0f} req/s, "
            f"spool {out['spool_bytes']:,} B in {len(files)} file(s)"
            + (f", {inspected.get('records')} records" if inspected else ""))

        self.broker = Broker(self.workdir, topic)
        start = time.time()
        drain = Nginx(self.workdir, self.broker, 1, tag="replay",
                      spool=(spool, f"replay_rate={REPLAY_RATE}"))
        samples = []
        deadline = start + max(60, expected / 5_000)
        try:
            while True:
                appended = self.broker.tally(topic)["appended"]
                files = spool_files(spool)
                now = time.time() - start
                samples.append([round(now, 2), appended, sum(files.values())])
                if appended >= expected and not files:
                    break
                if time.time() > deadline:
                    out["stalled"] = True
                    break
                time.sleep(0.2)
        finally:
            drain.quit()
        elapsed = samples[-1][0]
        began = next((s for s in samples if s[1] > 0), None)
        try:
            final = self.broker.tally(topic, body)
        finally:
            self.broker.stop()
        errors = drain.error_log()
        out.update({
            "drain_s": elapsed, "samples": samples,
            "events_per_s": round(samples[-1][1] / elapsed) if elapsed else None,
            # From the first sample with events in the topic: the rate once replay runs.
            "first_event_s": began[0] if began else None,
            "drain_events_per_s": (round((samples[-1][1] - began[1]) / (elapsed - began[0]))
                                   if began and elapsed > began[0] else None),
            "delivered": final["appended"], "verified": final["equal"],
            "verified_different": final["different"], "retained": final["retained"],
            "drain_spool": spool_summary(errors, spool),
            "drain_error_log_lines": {lvl: errors.count(f"[{lvl}]")
                                      for lvl in ("alert", "crit", "error", "warn")},
            "drain_fatal_lines": [line for line in errors.splitlines()
                                  if "[alert]" in line or "[crit]" in line][:5],
        })
        log(f"replay drain: {out['delivered']} of {expected} in Kafka after {elapsed:.1f} s "
            f"({out['events_per_s']} events/s; first after {out['first_event_s']} s), "
            f"{out['drain_spool']['left_files']} spool file(s) left"
            + (" — STALLED, kept: " + str(self.workdir) if out.get("stalled") else ""))
        if not out.get("stalled"):
            fill.remove()
            drain.remove()
            shutil.rmtree(spool, ignore_errors=True)
        else:
            out["kept"] = [str(fill.prefix), str(drain.prefix), str(spool)]
        return out

    def soak_wrk(self, nginx, path, body, topic, shape, seconds, every, samples):
        """One long wrk run, sampling the workers' RSS while it goes."""
        argv, env = wrk_command(nginx.port, path, body, topic, shape["connections"],
                                shape["threads"], seconds, shape["cpu"])
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        start = time.time()
        while proc.poll() is None and time.time() - start < seconds + 60:
            time.sleep(every)
            if proc.poll() is None:
                samples.append([round(time.time() - start, 1), nginx.rss_kb()])
        out, err = proc.communicate(timeout=60)
        return wrk_result(out, err)


def median(values):
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 3) if values else None


def spread(values):
    """The bench's noise estimate: half the range across rounds, relative to the median
    (0.03 reads ±3 %). None with fewer than two rounds."""
    values = [v for v in values if v]
    if len(values) < 2:
        return None
    return round((max(values) - min(values)) / 2 / statistics.median(values), 3)


def summarize(results):
    """Medians per contestant over rounds; counts summed."""
    out = {}
    for c in ALL_CONTESTANTS:
        rs = [r for r in results if r["contestant"] == c]
        if not rs:
            continue
        out[c] = {
            "rounds": len(rs),
            "rps": median([r["rps"] for r in rs]),
            "rps_spread": spread([r["rps"] for r in rs]),
            "per_core_spread": spread([r["rps_per_core"] for r in rs]),
            "p50_ms": median([r["p50_ms"] for r in rs]),
            "p99_ms": median([r["p99_ms"] for r in rs]),
            "cpu_ms_per_10k": median([r["cpu_ms_per_10k"] for r in rs]),
            "rps_per_core": median([r["rps_per_core"] for r in rs]),
            "requests": sum(r["requests"] for r in rs),
            "answered_2xx": sum(r["answered_2xx"] for r in rs),
            "answered_other": sum(r["answered"] - r["answered_2xx"] for r in rs),
            "delivered": sum(r["delivered"] for r in rs),
            "verified": sum(r["verified"] for r in rs),
            "retained": sum(r.get("retained", 0) for r in rs),
            "verified_different": sum(r.get("verified_different", 0) for r in rs),
            "rss_kb": median([r["rss_kb_after"] for r in rs]),
            "rss_kb_before": median([r["rss_kb_before"] for r in rs]),
            "rss_kb_start": median([r["rss_kb_start"] for r in rs]),
            "socket_errors": sum(r["socket_errors"] for r in rs),
            "error_lines": sum(r["error_log_lines"]["error"] for r in rs),
            "alert_lines": sum(r["error_log_lines"]["alert"] + r["error_log_lines"]["crit"]
                               for r in rs),
        }
        if c == "lua":
            out[c]["error_handler_lines"] = sum(r["lua_error_handler_lines"] for r in rs)
            out[c]["timer_aborts"] = sum(r["lua_aborted_lines"] for r in rs)
        spools = [r["spool"] for r in rs if "spool" in r]
        if spools:
            out[c]["spool"] = {k: sum(x.get(k, 0) for x in spools) for k in spools[0]}
        if c in METRICS_CONTESTANTS:
            counted = [r.get("counters", {}).get("requests_accepted") for r in rs]
            out[c]["counted_accepted"] = (None if None in counted else sum(counted))
        scrapes = [r["scrape"] for r in rs if "scrape" in r]
        if scrapes:
            out[c]["scrapes"] = {k: sum(x.get(k, 0) for x in scrapes)
                                 for k in ("attempts", "ok", "failed", "skipped")}
            reasons = {}
            for x in scrapes:
                for why, n in x.get("reasons", {}).items():
                    reasons[why] = reasons.get(why, 0) + n
            out[c]["scrapes"]["reasons"] = reasons
            out[c]["scrapes"]["p50_ms"] = median([x.get("p50_ms") for x in scrapes])
            out[c]["scrapes"]["max_ms"] = max((x.get("max_ms") or 0) for x in scrapes)
    for c in out:
        # Each against the ceiling of its own nginx.
        ceiling = out.get("ceiling-1.28" if c in VENDORED_CONTESTANTS else "ceiling")
        if not ceiling or not ceiling["rps"]:
            continue
        out[c]["rps_vs_ceiling"] = round(out[c]["rps"] / ceiling["rps"], 3)
        if out[c]["rps_per_core"] and ceiling["rps_per_core"]:
            out[c]["per_core_vs_ceiling"] = round(
                out[c]["rps_per_core"] / ceiling["rps_per_core"], 3)
        if ceiling["p99_ms"]:
            out[c]["p99_vs_ceiling"] = round(out[c]["p99_ms"] / ceiling["p99_ms"], 3)
    m = out.get("module")
    for c in METRICS_CONTESTANTS + DELIVERY_CONTESTANTS:
        if m and c in out and m["rps"]:
            out[c]["rps_vs_module"] = round(out[c]["rps"] / m["rps"], 3)
            if out[c]["rps_per_core"] and m["rps_per_core"]:
                out[c]["per_core_vs_module"] = round(out[c]["rps_per_core"] / m["rps_per_core"],
                                                     3)
    return out


def metrics_verdicts(summary):
    """The metrics issue's two requirements, from the headline cell: (a) with counters on,
    the ingest path costs at most 2 % more than with them off (req/s per worker CPU-second,
    module+metrics / module); (b) scraping under load moves the served req/s by no more than
    noise (module+scrape / module+metrics, against the larger of the two spreads). Both are
    judged on the ratios as printed, to two decimals: what one reads is what was judged."""
    m = summary.get("module")
    on = summary.get("module+metrics")
    scraped = summary.get("module+scrape")
    out = {}
    if m and on and m["rps_per_core"] and on["rps_per_core"]:
        ratio = on["rps_per_core"] / m["rps_per_core"]
        out["counters_on_vs_off"] = {
            "measure": "req/s per worker CPU-second, module+metrics / module",
            "ratio": round(ratio, 3), "served_ratio": round(on["rps"] / m["rps"], 3),
            "within_2pct": round(ratio, 2) >= 0.98}
    if on and scraped and on["rps"]:
        ratio = scraped["rps"] / on["rps"]
        spreads = [on.get("rps_spread"), scraped.get("rps_spread")]
        noise = None if None in spreads else max(spreads)
        per_core = (scraped["rps_per_core"] / on["rps_per_core"]
                    if scraped["rps_per_core"] and on["rps_per_core"] else None)
        out["scrape_vs_not"] = {
            "measure": "req/s served, module+scrape / module+metrics",
            "ratio": round(ratio, 3),
            "per_core_ratio": round(per_core, 3) if per_core else None,
            "noise": noise,
            "within_noise": (None if noise is None
                             else abs(round(ratio, 2) - 1) <= round(noise, 2) + 1e-9)}
    return out


def delivery_verdicts(summary):
    """The delivery issue's throughput requirements, from the headline cell: module+spool
    (queued with a spool) within noise of module (served req/s, against the larger of the two
    spreads), and module+durable at least 0.80 of the ceiling (served req/s and req/s per
    worker CPU-second). Judged on the ratios as printed, to two decimals."""
    m, c = summary.get("module"), summary.get("ceiling")
    spool, durable = summary.get("module+spool"), summary.get("module+durable")
    out = {}
    if m and spool and m["rps"]:
        ratio = spool["rps"] / m["rps"]
        spreads = [m.get("rps_spread"), spool.get("rps_spread")]
        noise = None if None in spreads else max(spreads)
        per_core = (spool["rps_per_core"] / m["rps_per_core"]
                    if spool["rps_per_core"] and m["rps_per_core"] else None)
        out["spool_vs_module"] = {
            "measure": "req/s served, module+spool / module",
            "ratio": round(ratio, 3),
            "per_core_ratio": round(per_core, 3) if per_core else None,
            "noise": noise,
            "within_noise": (None if noise is None
                             else abs(round(ratio, 2) - 1) <= round(noise, 2) + 1e-9)}
    if c and durable and c["rps"]:
        ratio = durable["rps"] / c["rps"]
        per_core = (durable["rps_per_core"] / c["rps_per_core"]
                    if durable["rps_per_core"] and c["rps_per_core"] else 0)
        out["durable_vs_ceiling"] = {
            "measure": "module+durable / ceiling (served req/s, and req/s per worker "
                       "CPU-second)",
            "served": round(ratio, 3), "per_core": round(per_core, 3),
            "met": round(ratio, 2) >= 0.80 and round(per_core, 2) >= 0.80}
    return out


def acked_summary(results):
    """module+acked per number of connections: medians over rounds, counts summed."""
    out = {}
    for n in ACKED_CONNECTIONS:
        rs = [r for r in results if r["connections"] == n]
        s = summarize(rs).get(ACKED)
        if s:
            s["connections"] = n
            s["statuses"] = {}
            for r in rs:
                for status, k in r["statuses"].items():
                    s["statuses"][status] = s["statuses"].get(status, 0) + k
            out[str(n)] = s
    return out


def make_batch_body(path, lines_path, events=BATCH_EVENTS, size=200):
    """A kc.js-shaped batch: a JSON array of `events` distinct events of `size` bytes each;
    and each event on a line of lines_path, for kafka-tally --expect-lines."""
    out = []
    for i in range(events):
        event = (f'{{"type":"event","name":"add_to_cart","url":"https://shop.example/p/{i:06d}",'
                 f'"title":"Kafka mug","ts":{1795488379258 + i},"lang":"en-GB",'
                 f'"screen":"1280x720","props":{{"sku":"KC-{i:04d}","price":19.9}},"pad":"')
        event += "x" * (size - len(event) - 2) + '"}'
        assert len(event) == size
        out.append(event)
    path.write_text("[" + ",".join(out) + "]")
    lines_path.write_text("\n".join(out) + "\n")


def sdk_size():
    """kc.js as nginx serves it (sdk/dist/kc.js): bytes, and gzipped (level 9)."""
    import gzip
    data = (REPO / "sdk/dist/kc.js").read_bytes()
    return {"bytes": len(data), "gzip_bytes": len(gzip.compress(data, 9))}


def collect_summary(results):
    """The collect runs: medians of the rates, counts summed."""
    if not results:
        return None
    return {
        "rounds": len(results),
        "events_per_s": median([r["events_per_s"] for r in results]),
        "rps": median([r["rps"] for r in results]),
        "p99_ms": median([r["p99_ms"] for r in results]),
        "body_bytes": results[0]["body_bytes"],
        "connections": results[0]["connections"],
        "events_accepted": sum(r["events_accepted"] for r in results),
        "delivered": sum(r["delivered"] for r in results),
        "verified": sum(r["verified"] for r in results),
        "retained": sum(r["retained"] for r in results),
        "non_2xx": sum(r["answered"] - r["answered_2xx"] for r in results),
        "cpu_ms_per_10k_events": median([r["cpu_ms_per_10k"] / BATCH_EVENTS for r in results]),
    }


def make_2kb_body(path):
    """A 2048-byte JSON event, the shape of postdata.json with a longer payload."""
    make_body(path, 2048)


def make_body(path, size):
    """A JSON event of `size` bytes (at least 64), the shape of postdata.json, its payload
    as long as it takes; at 64 bytes, a short one."""
    if size < 200:
        head, tail = '{"uuid":"2b8c376e-bd20-11e6","note":"', '"}'
        filler = "".join(chr(ord("a") + i % 26) for i in range(size - len(head) - len(tail)))
        path.write_text(head + filler + tail)
        assert path.stat().st_size == size
        return
    head = ('{"uuid":"2b8c376e-bd20-11e6-9ebf-525499b45be6","event_time":"2016-12-08T18:08:12",'
            '"page":"www.example.com/poster.html","element":"register",'
            '"attrs":{"title":"test","user_id":1234,"note":"')
    tail = '"}}'
    filler = "".join(chr(ord("a") + i % 26) for i in range(size - len(head) - len(tail)))
    path.write_text(head + filler + tail)
    assert path.stat().st_size == size


def machine():
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = 0
    try:
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        pass
    nginx_v = subprocess.run([str(NGINX), "-v"], capture_output=True, text=True).stderr.strip()
    wrk_v = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.splitlines()
    return {"cpu": model, "cpus": os.cpu_count(), "memory_gib": round(mem_kb / 2**20, 1),
            "kernel": platform.release(), "nginx": nginx_v.replace("nginx version: ", ""),
            "wrk": wrk_v[0] if wrk_v else "", "os": platform.platform()}


# bench/callgrind.py on 20261204, before issue 12's changes: the module's extra instructions
# per request over the ceiling (nginx's thread, librdkafka's threads, in all).
CALLGRIND_BEFORE = {"main": 3007, "other_threads": 2257, "total": 5264}


def goals(summary_1w, paced, soak, rss_bound_kb, acked=None, replay=None, collect=None,
          sdk=None, cells=None, callgrind=None, module_options=None):
    g = {}
    module_options = module_options or PRODUCER_OPTIONS
    c, m = summary_1w.get("ceiling"), summary_1w.get("module")
    if c and m:
        # wrk on one core cannot saturate one worker on the other, so the served rate alone
        # flatters everyone; the cost per request (requests per worker CPU-second) is the
        # ratio that holds at saturation. Both must reach the goal.
        ratio = m["rps"] / c["rps"]
        per_core = (m["rps_per_core"] / c["rps_per_core"]
                    if m["rps_per_core"] and c["rps_per_core"] else 0)
        g["throughput_vs_ceiling_1_worker"] = {
            "goal": ">= 0.95 (served req/s, and req/s per worker CPU-second)",
            "value": {"served": round(ratio, 3), "per_core": round(per_core, 3)},
            "met": ratio >= 0.95 and per_core >= 0.95}
    vm = summary_1w.get("module-1.28")
    if vm and vm.get("rps_vs_ceiling") is not None:
        g["throughput_vs_ceiling_1_worker_nginx_1_28"] = {
            "goal": ">= 0.95 (served req/s, and req/s per worker CPU-second; the vendored "
                    "nginx and its own ceiling)",
            "value": {"served": vm["rps_vs_ceiling"], "per_core": vm.get("per_core_vs_ceiling")},
            "met": vm["rps_vs_ceiling"] >= 0.95
            and (vm.get("per_core_vs_ceiling") or 0) >= 0.95}
    for cell in cells or []:
        m2 = cell["summary"].get("module")
        if not m2 or m2.get("rps_vs_ceiling") is None:
            continue
        if cell["workers"] == 1 and cell["body"] == "2kb":
            name, want = "throughput_vs_ceiling_2kb", 0.90
        elif cell["workers"] != 1 and cell["body"] == "postdata":
            name, want = "throughput_vs_ceiling_workers_auto", 0.95
        else:
            continue
        g[name] = {"goal": f">= {want:.2f} (served req/s, and req/s per worker CPU-second)",
                   "value": {"served": m2["rps_vs_ceiling"],
                             "per_core": m2.get("per_core_vs_ceiling")},
                   "met": m2["rps_vs_ceiling"] >= want
                   and (m2.get("per_core_vs_ceiling") or 0) >= want}
    if callgrind:
        e = callgrind["extra"]
        g["callgrind_extra_instructions_halved"] = {
            "goal": f"the module's extra instructions per request over the ceiling at most half "
                    f"of {CALLGRIND_BEFORE['total']:,} (20261204: "
                    f"{CALLGRIND_BEFORE['main']:,} in nginx's thread, "
                    f"{CALLGRIND_BEFORE['other_threads']:,} in librdkafka's)",
            "value": {k: round(v) for k, v in e.items()},
            "met": e["total"] <= CALLGRIND_BEFORE["total"] / 2}
        both = {k: [s["delivered"], s["answered_2xx"]]
                for k, s in (("module", m), ("module-1.28", summary_1w.get("module-1.28")))
                if s}
        g["delivered_equals_answered_2xx"] = {
            "goal": "delivered == answered 2xx (module, module-1.28)", "value": both,
            "met": all(a == b for a, b in both.values())}
    extra = [c for c in METRICS_CONTESTANTS if summary_1w.get(c)]
    if extra:
        g["metrics_delivered_equals_answered_2xx"] = {
            "goal": "delivered == answered 2xx, with counters on and scraped",
            "value": {c: [summary_1w[c]["delivered"], summary_1w[c]["answered_2xx"]]
                      for c in extra},
            "met": all(summary_1w[c]["delivered"] == summary_1w[c]["answered_2xx"]
                       for c in extra)}
        counted = {c: [summary_1w[c].get("counted_accepted"), summary_1w[c]["answered_2xx"]]
                   for c in extra}
        g["metrics_counters_equal_access_log"] = {
            "goal": "the module's accepted count == answered 2xx (access log)",
            "value": counted, "met": all(a == b for a, b in counted.values())}
    scraped = summary_1w.get("module+scrape")
    if scraped and scraped.get("scrapes"):
        sc = scraped["scrapes"]
        g["metrics_scrapes_answered"] = {
            "goal": f"every scrape answered 200 with Prometheus text ({SCRAPE_HZ}/s under load)",
            "value": {"ok": sc["ok"], "failed": sc["failed"], "skipped": sc["skipped"]},
            "met": sc["failed"] == 0 and sc["ok"] > 0}
    v = metrics_verdicts(summary_1w)
    if "counters_on_vs_off" in v:
        a = v["counters_on_vs_off"]
        g["metrics_counters_on_cost_within_2pct"] = {
            "goal": ">= 0.98 (req/s per worker CPU-second, counters on / off)",
            "value": a["ratio"], "met": a["within_2pct"]}
    if "scrape_vs_not" in v:
        b = v["scrape_vs_not"]
        g["metrics_scrape_within_noise"] = {
            "goal": "|1 - req/s scraped / not scraped| <= noise (spread across rounds)",
            "value": {"ratio": b["ratio"], "noise": b["noise"]}, "met": b["within_noise"]}
    d = delivery_verdicts(summary_1w)
    if "spool_vs_module" in d:
        a = d["spool_vs_module"]
        g["spool_queued_within_noise"] = {
            "goal": "|1 - req/s module+spool / module| <= noise (spread across rounds)",
            "value": {"ratio": a["ratio"], "noise": a["noise"]}, "met": a["within_noise"]}
    if "durable_vs_ceiling" in d:
        b = d["durable_vs_ceiling"]
        g["durable_vs_ceiling"] = {
            "goal": ">= 0.80 (served req/s, and req/s per worker CPU-second)",
            "value": {"served": b["served"], "per_core": b["per_core"]}, "met": b["met"]}
    ledger = {c: [summary_1w[c]["delivered"], summary_1w[c]["answered_2xx"]]
              for c in DELIVERY_CONTESTANTS if summary_1w.get(c)}
    if ledger:
        # With fsync=batch an answer waits for its batch's sync: a request wrk closes while
        # it waits is logged 499 and its event is produced all the same, as in acked mode.
        waited = {c: summary_1w[c]["answered_other"] for c in ledger if c == "module+batch"}
        g["delivery_delivered_equals_answered_2xx"] = {
            "goal": "delivered == answered 2xx (queued with a spool, durable); with fsync=batch, "
                    "answered 2xx <= delivered <= answered 2xx + the 499s of requests closed "
                    "while their answer waited for the sync",
            "value": ledger,
            "met": all(b <= a <= b + waited.get(c, 0) for c, (a, b) in ledger.items())}
    if acked:
        linger = float(module_options["linger.ms"])
        g["acked_delivered_at_least_answered_2xx"] = {
            "goal": "delivered >= answered 2xx",
            "value": {n: [s["delivered"], s["answered_2xx"]] for n, s in acked.items()},
            "met": all(s["delivered"] >= s["answered_2xx"] for s in acked.values())}
        g["acked_p99_within_linger_plus_5ms"] = {
            "goal": f"p99 <= linger.ms + 5 = {linger + 5:g} ms (at 64 and 512 connections)",
            "value": {n: s["p99_ms"] for n, s in acked.items()},
            "met": all(s["p99_ms"] <= linger + 5 for s in acked.values())}
    if replay and "error" not in replay:
        g["replay_drains_spool"] = {
            "goal": "every spooled event in Kafka once, the spool directory empty",
            "value": {"events_per_s": replay["events_per_s"],
                      "delivered": replay["delivered"], "spooled": replay["expected"],
                      "files_left": replay["drain_spool"]["left_files"]},
            "met": (not replay.get("stalled") and replay["delivered"] == replay["expected"]
                    and replay["drain_spool"]["left_files"] == 0)}
    elif replay:
        g["replay_drains_spool"] = {"goal": "the replay run completes",
                                    "value": replay["error"], "met": False}
    if collect:
        g["collect_batch_500k_events_per_s"] = {
            "goal": "kafka_collect, 1 worker, 100-event batches of 200-byte events: at least "
                    "500,000 events/s into Kafka, delivered = accepted, every event read back "
                    "equal to one of the batch's",
            "value": {"events_per_s": collect["events_per_s"],
                      "accepted": collect["events_accepted"], "delivered": collect["delivered"],
                      "verified": collect["verified"], "retained": collect["retained"]},
            "met": (collect["events_per_s"] >= 500_000
                    and collect["delivered"] == collect["events_accepted"]
                    and collect["verified"] == collect["retained"])}
    if sdk:
        g["sdk_at_most_3kb_gzipped"] = {"goal": "kc.js at most 3,072 bytes gzipped",
                                        "value": sdk["gzip_bytes"],
                                        "met": sdk["gzip_bytes"] <= 3072}
    if paced.get("ceiling") and paced.get("module") and paced["ceiling"]["p99_ms"]:
        ratio = paced["module"]["p99_ms"] / paced["ceiling"]["p99_ms"]
        g["p99_vs_ceiling_at_half_load"] = {
            "goal": "<= 1.1", "value": round(ratio, 3), "met": ratio <= 1.1}
    if soak:
        samples = soak.get("rss_kb_samples") or []
        later = [kb for t, kb in samples if t >= min(10, samples[-1][0] / 2)] if samples else []
        growth = (max(later) - min(later)) if later else None
        flat = growth is not None and growth <= max(0.1 * min(later), 4096)
        g["rss_flat_and_bounded"] = {
            "goal": f"flat across the run, below the queue bound ({rss_bound_kb} kB)",
            "value": {"min_kb": min(later) if later else None,
                      "max_kb": max(later) if later else None, "growth_kb": growth},
            "met": flat and (max(later) if later else 0) <= rss_bound_kb}
    return g


def metrics_markdown(report):
    """The headline cell's metrics contestants against `module` (counters off), and the
    verdicts on the metrics issue's two requirements."""
    headline = next((cell["summary"] for cell in report["cells"]
                     if cell["workers"] == 1 and cell["body"] == "postdata"), {})
    if not any(headline.get(c) for c in METRICS_CONTESTANTS):
        return []

    def pm(x):
        return "—" if x is None else f"±{x * 100:.1f} %"

    lines = ["", "Metrics counters (1 worker, postdata.json): `module` has them off; "
             "`module+metrics` has a `location = /metrics { kafka_metrics; }` beside its ingest "
             f"location, so they are on; `module+scrape` too, with a scraper GETting /metrics "
             f"{SCRAPE_HZ} times a second on its own connection during the load. ± is the "
             "spread across rounds (half the range, relative to the median), the noise "
             "estimate.", "",
             "| contestant | req/s | × ceiling | × module | ± | req/s per worker core "
             "| × ceiling | × module | ± | p99 ms | answered 2xx | in Kafka "
             "| counted accepted | scrapes ok / failed |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c in ("module",) + METRICS_CONTESTANTS:
        s = headline.get(c)
        if not s:
            continue
        sc = s.get("scrapes")
        counted = s.get("counted_accepted")
        lines.append(
            f"| {c} | {s['rps']:,.0f} | {s.get('rps_vs_ceiling', 0):.2f} "
            f"| {s.get('rps_vs_module', 1):.2f} | {pm(s.get('rps_spread'))} "
            f"| {s['rps_per_core'] or 0:,.0f} | {s.get('per_core_vs_ceiling', 0):.2f} "
            f"| {s.get('per_core_vs_module', 1):.2f} | {pm(s.get('per_core_spread'))} "
            f"| {s['p99_ms']:.2f} | {s['answered_2xx']:,} | {s['delivered']:,} "
            f"| {'—' if counted is None else format(counted, ',')} "
            f"| {'—' if not sc else format(sc['ok'], ',') + ' / ' + format(sc['failed'], ',')} |")
    v = metrics_verdicts(headline)
    lines.append("")
    a, b = v.get("counters_on_vs_off"), v.get("scrape_vs_not")
    if a:
        lines.append(f"- counters on vs off: {a['ratio']:.2f} "
                     f"(within 2%: {'yes' if a['within_2pct'] else 'no'})")
    if b:
        if b["noise"] is None:
            judged = "±?: not judged, one round has no spread"
        else:
            judged = f"±{b['noise']:.2f}: {'yes' if b['within_noise'] else 'no'}"
        lines.append(f"- scraping under load vs not: {b['ratio']:.2f} (noise {judged})")
    lines.append("")
    lines.append("Counters on vs off compares the cost per request (req/s per worker "
                 "CPU-second, module+metrics / module"
                 + (f"; served req/s: {a['served_ratio']:.2f}" if a else "")
                 + "); scraping vs not compares the served req/s (module+scrape / "
                 "module+metrics"
                 + (f"; per worker CPU-second: {b['per_core_ratio']:.2f}"
                    if b and b.get("per_core_ratio") else "")
                 + ") against the larger spread of the two.")
    scraped = headline.get("module+scrape", {}).get("scrapes")
    if scraped and (scraped["failed"] or scraped["skipped"]):
        why = ", ".join(f"{k}: {n}" for k, n in scraped["reasons"].items()) or "—"
        lines.append(f"Scrapes failed: {scraped['failed']} ({why}); ticks skipped (the "
                     f"scraper fell behind): {scraped['skipped']}.")
    return lines


def delivery_markdown(report):
    """The delivery modes: module+spool and module+durable beside module and the ceiling in
    the headline cell, module+acked at 64 and 512 connections, and the replay run."""
    headline = next((cell["summary"] for cell in report["cells"]
                     if cell["workers"] == 1 and cell["body"] == "postdata"), {})
    acked = report.get("acked") or {}
    replay = report.get("replay")
    if not any(headline.get(c) for c in DELIVERY_CONTESTANTS) and not acked and not replay:
        return []

    def pm(x):
        return "—" if x is None else f"±{x * 100:.1f} %"

    lines = []
    if any(headline.get(c) for c in DELIVERY_CONTESTANTS):
        lines += ["", "Delivery modes (1 worker, postdata.json, the same rounds): "
                  "`module+spool` is `module` (queued) with a `kafka_spool` in the run's "
                  "directory; `module+durable` has `kafka_delivery durable` (each event "
                  "appended to the worker's journal before the answer; fsync=1s, the "
                  "default); `module+batch` is `module+durable` with `fsync=batch` (each answer waits for "
                  "the sync of its batch). ± is the spread across rounds. Spool at exit: what the workers "
                  "said they journaled and spooled, and the files left after a graceful stop.",
                  "",
                  "| contestant | req/s | × ceiling | × module | ± | req/s per worker core "
                  "| × ceiling | × module | p99 ms | CPU ms / 10k req | answered 2xx "
                  "| in Kafka | journaled / spooled | spool files left |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for c in ("ceiling", "module") + DELIVERY_CONTESTANTS:
            s = headline.get(c)
            if not s:
                continue
            sp = s.get("spool")
            lines.append(
                f"| {c} | {s['rps']:,.0f} | {s.get('rps_vs_ceiling', 0):.2f} "
                f"| {'—' if c == 'ceiling' else format(s.get('rps_vs_module', 1), '.2f')} "
                f"| {pm(s.get('rps_spread'))} "
                f"| {s['rps_per_core'] or 0:,.0f} | {s.get('per_core_vs_ceiling', 0):.2f} "
                f"| {'—' if c == 'ceiling' else format(s.get('per_core_vs_module', 1), '.2f')} "
                f"| {s['p99_ms']:.2f} | {s['cpu_ms_per_10k']:.0f} | {s['answered_2xx']:,} "
                f"| {'—' if c.startswith('ceiling') else format(s['delivered'], ',')} "
                f"| {'—' if not sp else format(sp['journaled'], ',') + ' / ' + format(sp['spooled'], ',')} "
                f"| {'—' if not sp else format(sp['left_files'], ',') + ' (' + format(sp['left_bytes'], ',') + ' B)'} |")
        v = delivery_verdicts(headline)
        a, b = v.get("spool_vs_module"), v.get("durable_vs_ceiling")
        lines.append("")
        if a:
            judged = ("±?: not judged, one round has no spread" if a["noise"] is None
                      else f"±{a['noise']:.2f}: {'yes' if a['within_noise'] else 'no'}")
            lines.append(f"- queued with a spool vs without: {a['ratio']:.2f} served req/s"
                         + (f", {a['per_core_ratio']:.2f} per worker CPU-second"
                            if a.get("per_core_ratio") else "")
                         + f" (noise {judged})")
        if b:
            lines.append(f"- durable vs the ceiling: {b['served']:.2f} served req/s, "
                         f"{b['per_core']:.2f} per worker CPU-second (goal ≥ 0.80: "
                         f"{'yes' if b['met'] else 'no'})")
    if acked:
        opts = report["settings"].get("module_options", {"linger.ms": "5"})
        linger = float(opts["linger.ms"])
        lines += ["", f"Acknowledged delivery (`module+acked`: `kafka_delivery acked`, the "
                  f"answer waits for the broker's delivery report; 1 worker, postdata.json, "
                  f"linger.ms {opts['linger.ms']}, kafka_ack_timeout 5s; goal "
                  f"p99 ≤ linger.ms + 5 = {linger + 5:g} ms):", "",
                  "| connections | req/s | ± | req/s per worker core | p50 ms | p99 ms "
                  "| p99 ≤ {:g} ms | answered 2xx | answered other | in Kafka |".format(linger + 5),
                  "|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|"]
        for n, s in acked.items():
            lines.append(
                f"| {n} | {s['rps']:,.0f} | {pm(s.get('rps_spread'))} "
                f"| {s['rps_per_core'] or 0:,.0f} | {s['p50_ms']:.2f} | {s['p99_ms']:.2f} "
                f"| {'yes' if s['p99_ms'] <= linger + 5 else 'no'} | {s['answered_2xx']:,} "
                f"| {s['answered_other']:,} | {s['delivered']:,} |")
        other = {}
        for s in acked.values():
            for status, k in s.get("statuses", {}).items():
                if not status.startswith("2"):
                    other[status] = other.get(status, 0) + k
        if other:
            lines.append("")
            lines.append("Answered other: " + ", ".join(f"{k:,} × {st}" for st, k in
                                                       sorted(other.items()))
                         + (" (499: wrk closed a connection while its request waited for the "
                            "broker, at the end of the warm-up and of the load; the event was "
                            "produced all the same)" if "499" in other else "") + ".")
    if replay and "error" in replay:
        lines += ["", f"Replay: the run failed: {replay['error']}"]
    elif replay:
        insp = replay.get("spool_inspect") or {}
        records = insp.get("records")
        lines += ["", f"Replay (1 worker): {replay['expected']:,} events spooled while the "
                  f"broker was down (posted at {replay['fill_rps']:,.0f} req/s, "
                  f"message.timeout.ms {replay['fill_message_timeout_ms']}; "
                  f"{replay['fill_answered_2xx']:,} answered 2xx, one of them delivered "
                  f"before the broker went), a spool of {replay['spool_bytes']:,} bytes in "
                  f"{replay['spool_files']} file(s)"
                  + (f" ({records:,} records by kafka-spool inspect)" if records is not None
                     else "")
                  + f". A fresh broker and nginx with replay_rate={replay['replay_rate']:,}: "
                  f"{replay['delivered']:,} events in Kafka"
                  + (" and the spool directory empty" if replay['drain_spool']['left_files'] == 0
                     else f", {replay['drain_spool']['left_files']} spool file(s) left")
                  + f" after {replay['drain_s']:.1f} s from nginx's start: "
                  f"**{replay['events_per_s']:,} events/s**"
                  + (f" ({replay['drain_events_per_s']:,} events/s from the first replayed "
                     f"event, {replay['first_event_s']:.1f} s after the start)"
                     if replay.get("drain_events_per_s") else "")
                  + f"; read back {replay['verified']:,} byte-equal, "
                  f"{replay['verified_different']:,} different"
                  + (f"; STALLED, kept in {', '.join(replay['kept'])}"
                     if replay.get("stalled") else "") + "."]
    return lines


def markdown(report):
    lines = []
    mach = report["machine"]
    lines.append(f"Run {report['run_id']} ({'quick' if report['quick'] else 'full'}: "
                 f"{report['settings']['rounds']} round(s) of {report['settings']['duration_s']} s"
                 f" per contestant and cell), {mach['nginx']}, {mach['cpus']} CPUs "
                 f"({mach['cpu']}), kernel {mach['kernel']}; wrk, broker (librdkafka mock "
                 f"cluster) and nginx on the same machine.")
    if report["quick"]:
        lines.append("")
        lines.append("Quick run: every figure is a single 3 s sample and swings by 10-20 % from "
                     "run to run here; judge the goals on a full run (`make bench`).")
    lines.append("")
    lines.append("| contestant | workers | body | req/s | × ceiling | req/s per worker core "
                 "| × ceiling | p50 ms | p99 ms | CPU ms / 10k req | answered 2xx | in Kafka "
                 "| worker RSS kB |")
    lines.append("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for cell in report["cells"]:
        for c in ALL_CONTESTANTS:
            s = cell["summary"].get(c)
            if not s:
                continue
            lines.append(
                f"| {c} | {cell['workers_label']} | {cell['body']} | {s['rps']:,.0f} "
                f"| {s.get('rps_vs_ceiling', 0):.2f} | {s['rps_per_core'] or 0:,.0f} "
                f"| {s.get('per_core_vs_ceiling', 0):.2f} | {s['p50_ms']:.2f} | {s['p99_ms']:.2f} "
                f"| {s['cpu_ms_per_10k']:.0f} | {s['answered_2xx']:,} "
                f"| {'—' if c.startswith('ceiling') else format(s['delivered'], ',')} "
                f"| {s['rss_kb']:,.0f} |")
    checked = [(cell, cell["summary"][c]) for cell in report["cells"]
               for c in ("module",) + METRICS_CONTESTANTS + DELIVERY_CONTESTANTS
               if cell["summary"].get(c)]
    if checked:
        def total(key):
            return sum(m.get(key, 0) for _, m in checked)
        lines.append("")
        lines.append(f"The module put {total('delivered'):,} events in Kafka; the broker still "
                     f"held {total('retained'):,} at the end of each run (it drops its oldest), "
                     f"read back: {total('verified'):,} byte-equal to the body posted, "
                     f"{total('verified_different'):,} different.")
    lines += metrics_markdown(report)
    lua = report.get("lua")
    if lua:
        lines.append("")
        lines.append(f"The Lua design answered {lua['answered_2xx']:,} requests 200 in the "
                     f"headline cell and put {lua['delivered']:,} events in Kafka; its error "
                     f"handler logged {lua['error_handler_lines']:,} failed batches, and "
                     f"{lua['timer_aborts']:,} flush timer(s) aborted with a Lua error.")
    paced = report.get("paced") or {}
    if paced:
        lines.append("")
        lines.append(f"Latency at half the ceiling's throughput (1 worker, postdata.json, target "
                     f"{report['paced_target_rps']:,.0f} req/s):")
        lines.append("")
        lines.append("| contestant | req/s | p50 ms | p99 ms | p99 × ceiling |")
        lines.append("|---|---:|---:|---:|---:|")
        for c in CONTESTANTS:
            s = paced.get(c)
            if s:
                lines.append(f"| {c} | {s['rps']:,.0f} | {s['p50_ms']:.2f} | {s['p99_ms']:.2f} "
                             f"| {s.get('p99_vs_ceiling', 0):.2f} |")
    lines += delivery_markdown(report)
    lines += collect_markdown(report)
    lines += sweeps_markdown(report)
    if report.get("sweep"):
        lines.append("")
        opts = report["settings"].get("module_options", {"linger.ms": "5"})
        lines.append("Producer settings (module, 1 worker, postdata.json; the rest as the "
                     f"headline: linger.ms {opts.get('linger.ms', '5')}, lz4):")
        lines.append("")
        lines.append("| settings | req/s | × ceiling | p99 ms | CPU ms / 10k req "
                     "| bytes to broker / event | delivered / 2xx |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|")
        ceiling = report["headline"]["ceiling"]["rps"]
        for r in report["sweep"]:
            label = ", ".join(f"{k} {v}" for k, v in r["options"].items()) or "headline"
            if "error" in r:
                lines.append(f"| {label} | failed: {r['error']} | | | | | |")
                continue
            lines.append(f"| {label} | {r['rps']:,.0f} | {r['rps'] / ceiling:.2f} "
                         f"| {r['p99_ms']:.2f} | {r['cpu_ms_per_10k']:.0f} "
                         f"| {r.get('broker_bytes_per_event', '—')} "
                         f"| {r['delivered']:,} / {r['answered_2xx']:,} |")
    soak = report.get("soak")
    if soak:
        samples = soak.get("rss_kb_samples", [])
        lines.append("")
        lines.append(f"Worker RSS under load for {report['settings']['soak_s']} s (module, 1 "
                     f"worker, {soak['rps']:,.0f} req/s): "
                     + ", ".join(f"{t:.0f} s {kb:,} kB" for t, kb in samples)
                     + f"; {soak['delivered']:,} delivered of {soak['answered_2xx']:,} answered "
                     "2xx.")
    lines.append("")
    lines.append("Goals (reported, not asserted):")
    lines.append("")
    for name, g in report["goals"].items():
        met = ("not judged (one round: no spread)" if g["met"] is None
               else "met" if g["met"] else "NOT met")
        lines.append(f"- {name}: {g['value']} (goal {g['goal']}): {met}")
    return "\n".join(lines) + "\n"


def sweep_summary(results, key):
    """Ceiling and module per body size or number of connections: the module's ratios."""
    rows = []
    by = {}
    for r in results:
        point = r["body_bytes"] if key == "body" else r["connections"]
        by.setdefault(point, {})[r["contestant"]] = r
    for point in sorted(by):
        c, m = by[point].get("ceiling"), by[point].get("module")
        if not c or not m:
            continue
        rows.append({"point": point, "ceiling_rps": c["rps"], "module_rps": m["rps"],
                     "served": round(m["rps"] / c["rps"], 3) if c["rps"] else None,
                     "per_core": (round(m["rps_per_core"] / c["rps_per_core"], 3)
                                  if m["rps_per_core"] and c["rps_per_core"] else None),
                     "ceiling_p99_ms": c["p99_ms"], "module_p99_ms": m["p99_ms"],
                     "answered_2xx": m["answered_2xx"], "delivered": m["delivered"],
                     "errors": c["socket_errors"] + m["socket_errors"]})
    return rows


def linger_summary(runs):
    """The linger sweep per point (the ceiling first): medians over its rounds, the
    delivered and answered counts summed."""
    rows = []
    for point in [None] + sorted({r["linger_ms"] for r in runs} - {None}):
        rs = [r for r in runs if r["linger_ms"] == point]
        if not rs:
            continue
        rows.append({
            "contestant": rs[0]["contestant"], "linger_ms": point, "rounds": len(rs),
            "connections": rs[0]["connections"],
            "rps": median([r["rps"] for r in rs]),
            "p99_ms": median([r["p99_ms"] for r in rs]),
            "cpu_ms_per_10k": median([r["cpu_ms_per_10k"] for r in rs]),
            "other_threads_cpu_ms_per_10k": median(
                [r.get("other_threads_cpu_ms_per_10k") or 0 for r in rs]),
            "broker_bytes_per_event": (median([r["broker_bytes_per_event"] for r in rs])
                                       if all(r.get("broker_bytes_per_event") for r in rs)
                                       else None),
            "delivered": sum(r["delivered"] for r in rs),
            "answered_2xx": sum(r["answered_2xx"] for r in rs)})
    return rows


def sweeps_markdown(report):
    """The body-size and connection sweeps, and the instruction counts."""
    lines = []
    for key, title, unit in (("body_sweep", "Body sizes (1 worker, 64 connections)", "bytes"),
                             ("connection_sweep", "Connections (1 worker, postdata.json, "
                              "keep-alive)", "connections")):
        rows = report.get(key) or []
        if not rows:
            continue
        lines += ["", f"{title}, one round of {report['settings'].get('sweep_s', 8)} s each, "
                  "the module against the ceiling measured just before it:", "",
                  f"| {unit} | ceiling req/s | module req/s | × ceiling | per worker core "
                  "× ceiling | p99 ms ceiling / module | delivered / 2xx | socket errors |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in rows:
            lines.append(f"| {r['point']:,} | {r['ceiling_rps']:,.0f} | {r['module_rps']:,.0f} "
                         f"| {r['served'] or 0:.2f} | {r['per_core'] or 0:.2f} "
                         f"| {r['ceiling_p99_ms']:.2f} / {r['module_p99_ms']:.2f} "
                         f"| {r['delivered']:,} / {r['answered_2xx']:,} | {r['errors']:,} |")
    rows = report.get("linger_sweep") or []
    if rows:
        ceiling = next((r for r in rows if r["contestant"] == "ceiling"), None)
        rounds = rows[0].get("rounds", 1)
        lines += ["", f"linger.ms at a tenth of the ceiling's rate (1 worker, postdata.json, "
                  f"wrk paced, {rows[0]['connections']} connections, {rounds} round(s) of "
                  f"{report['settings'].get('sweep_s', 8)} s each, medians): CPU per request, "
                  "where batches are small and each batch's own cost counts; librdkafka's "
                  "threads apart, the part that wakes up once or more per batch:", "",
                  "| linger.ms | req/s | CPU ms / 10k req | × ceiling's CPU "
                  "| of which librdkafka's threads | p99 ms | bytes to broker / event "
                  "| delivered / 2xx |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in rows:
            name = "ceiling" if r["contestant"] == "ceiling" else f"{r['linger_ms']}"
            ratio = (f"{r['cpu_ms_per_10k'] / ceiling['cpu_ms_per_10k']:.2f}"
                     if ceiling and ceiling["cpu_ms_per_10k"] else "—")
            delivered = ("—" if r["contestant"] == "ceiling"
                         else f"{r['delivered']:,} / {r['answered_2xx']:,}")
            other = r.get("other_threads_cpu_ms_per_10k")
            lines.append(f"| {name} | {r['rps']:,.0f} | {r['cpu_ms_per_10k']:.0f} | {ratio} "
                         f"| {'—' if other is None else f'{other:.0f}'} "
                         f"| {r['p99_ms']:.2f} | {r.get('broker_bytes_per_event') or '—'} "
                         f"| {delivered} |")
    cg = report.get("callgrind")
    if cg:
        f, e = cg["figures"], cg["extra"]
        lines += ["", f"Instructions per request under callgrind (bench/callgrind.py: the "
                  f"vendored nginx, one process, `ab -k -c 1`, postdata.json, batches fixed at "
                  f"{cg['batch']} events; {cg['n2'] - cg['n1']:,} requests between two runs):",
                  "", "| | nginx's thread | librdkafka's threads | in all |",
                  "|---|---:|---:|---:|"]
        for name in ("ceiling", "module", "module, batches of 1"):
            x = f[name]
            lines.append(f"| {name} | {x['main']:,.0f} | {x['other_threads']:,.0f} "
                         f"| {x['total']:,.0f} |")
        lines.append(f"| **module − ceiling** | **{e['main']:,.0f}** "
                     f"| **{e['other_threads']:,.0f}** | **{e['total']:,.0f}** |")
    return lines


def collect_markdown(report):
    """The batch path of kafka_collect, and kc.js's size."""
    c, sdk, lines = report.get("collect"), report.get("sdk"), []
    if c:
        ceiling = (report.get("headline") or {}).get("ceiling", {}).get("rps")
        lines += ["", f"Batch collection (`kafka_collect`, 1 worker, {c['connections']} "
                  f"connections, POSTs of {BATCH_EVENTS} events of 200 bytes, "
                  f"{c['body_bytes']:,}-byte bodies, each event one Kafka message; median of "
                  f"{c['rounds']} round(s)): **{c['events_per_s']:,.0f} events/s** "
                  f"({c['rps']:,.0f} req/s"
                  + (f", {c['rps'] / ceiling:.3f} × the small-body ceiling" if ceiling else "")
                  + f"), p99 {c['p99_ms']:.2f} ms, {c['cpu_ms_per_10k_events']:.1f} worker "
                  f"CPU ms per 10k events; {c['events_accepted']:,} events accepted, "
                  f"{c['delivered']:,} in Kafka, {c['verified']:,} of the {c['retained']:,} "
                  f"the broker retains read back equal to the batch's"
                  + (f", {c['non_2xx']:,} answers not 2xx" if c["non_2xx"] else "") + "."]
    if sdk:
        lines += ["", f"kc.js (sdk/dist/kc.js, as nginx serves it): {sdk['bytes']:,} bytes, "
                  f"**{sdk['gzip_bytes']:,} gzipped**."]
    return lines


def chart(report, png):
    """Three panels per cell: requests/s served, requests per worker CPU-second, and
    events in Kafka per request answered 2xx."""
    if not shutil.which("gnuplot"):
        log("gnuplot is missing: no chart")
        return
    data = png.with_suffix(".dat")
    with open(data, "w") as f:
        for cell in report["cells"]:
            s = cell["summary"]
            label = f"\"{cell['workers_label']}{'w' if cell['workers'] == 1 else ''} {cell['body']}\""
            rps = [s.get(c, {}).get("rps", 0) or 0 for c in CONTESTANTS]
            core = [s.get(c, {}).get("rps_per_core", 0) or 0 for c in CONTESTANTS]
            frac = []
            for c in CONTESTANTS:
                x = s.get(c, {})
                frac.append(0 if c == "ceiling" or not x.get("answered_2xx")
                            else x["delivered"] / x["answered_2xx"])
            f.write(label + " " + " ".join(f"{v:.4f}" for v in rps + core + frac) + "\n")
    title = (f"nginx-kafka benchmark {report['run_id']}: {report['machine']['nginx']}, "
             f"{report['machine']['cpus']} CPUs, wrk and broker on the same machine")
    script = f"""
set terminal pngcairo size 1500,520 font "sans,10"
set output "{png}"
set multiplot layout 1,3 title "{title}"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set key top center horizontal outside
set grid ytics
set yrange [0:*]
set format y "%.0s%c"
set title "requests/s served (median of rounds)"
plot "{data}" using 2:xtic(1) title "return 204 (ceiling)" lc rgb "#9e9e9e", \\
     "" using 3 title "nginx-kafka" lc rgb "#1f77b4", \\
     "" using 4 title "OpenResty/Lua" lc rgb "#ff7f0e"
set title "requests per worker CPU-second"
plot "{data}" using 5:xtic(1) title "return 204 (ceiling)" lc rgb "#9e9e9e", \\
     "" using 6 title "nginx-kafka" lc rgb "#1f77b4", \\
     "" using 7 title "OpenResty/Lua" lc rgb "#ff7f0e"
set title "events in Kafka per request answered 2xx"
set yrange [0:1.1]
set format y "%.1f"
plot "{data}" using 9:xtic(1) title "nginx-kafka" lc rgb "#1f77b4", \\
     "" using 10 title "OpenResty/Lua (0: nothing arrived)" lc rgb "#ff7f0e"
unset multiplot
"""
    subprocess.run(["gnuplot"], input=script, text=True, check=True)
    data.unlink()


def update_readme(md):
    """A full run replaces the results between the README's bench markers."""
    readme = REPO / "README.md"
    text = readme.read_text()
    begin, end = "<!-- bench:begin -->", "<!-- bench:end -->"
    if begin not in text or end not in text:
        return
    head, rest = text.split(begin, 1)
    tail = rest.split(end, 1)[1]
    body = f"{begin}\n{md}\n![benchmark chart](bench/results/latest.png)\n{end}"
    readme.write_text(head + body + tail)


def render(path, out_dir):
    """Writes latest.md, latest.png and (for a full run) the README section again from a
    saved run, its cell figures recomputed from its runs: for a change of presentation."""
    report = json.loads(Path(path).read_text())
    # Paced runs are flagged since 20261122; before, they were the ones with other connections.
    matrix = [r for r in report["runs"] if not r.get("paced") and not r.get("acked")
              and not r.get("collect") and not r.get("sweep")
              and r["connections"] in (64, 128)]
    for cell in report["cells"]:
        cell["summary"] = summarize([r for r in matrix if r["workers"] == cell["workers"]
                                     and r["body"] == cell["body"]])
    if report.get("rss_bound_kb") is not None:
        headline = next(c["summary"] for c in report["cells"]
                        if c["workers"] == 1 and c["body"] == "postdata")
        report["goals"] = goals(headline, report["paced"], report["soak"],
                                report["rss_bound_kb"], report.get("acked"),
                                report.get("replay"), report.get("collect"), report.get("sdk"),
                                report["cells"], report.get("callgrind"),
                                report["settings"].get("module_options", {"linger.ms": "5"}))
    md = markdown(report)
    (out_dir / "latest.md").write_text(md)
    chart(report, out_dir / "latest.png")
    if not report["quick"] and out_dir.resolve() == (BENCH / "results").resolve():
        update_readme(md)
    print(md)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer, shorter rounds (about 2 min)")
    ap.add_argument("--no-metrics", action="store_true",
                    help="leave out module+metrics and module+scrape (a module without "
                         "kafka_metrics)")
    ap.add_argument("--no-delivery", action="store_true",
                    help="leave out module+spool, module+durable, module+acked and the replay "
                         "(a module without kafka_delivery and kafka_spool)")
    ap.add_argument("--no-collect", action="store_true",
                    help="leave out the batch path of kafka_collect (a module without it)")
    ap.add_argument("--sweeps", action="store_true",
                    help="run the sweeps with --quick too (shorter: 3 s a point)")
    ap.add_argument("--out", default=str(BENCH / "results"))
    ap.add_argument("--render", metavar="JSON", help="only render a saved run again")
    args = ap.parse_args()
    if args.render:
        render(args.render, Path(args.out))
        return
    s = Settings(args.quick)
    if args.sweeps:
        s.sweep = True
        s.sweep_duration = 3 if args.quick else s.sweep_duration
    for path in (NGINX, MODULE, BIN / "kafka-dev-broker", BIN / "kafka-tally"):
        if not path.exists():
            sys.exit(f"bench: {path} is missing (make bench builds it)")
    if not shutil.which("wrk"):
        sys.exit("bench: wrk is missing (make bench installs it)")

    if not args.no_metrics:
        check_metrics_config()
    if not args.no_delivery:
        check_delivery_config()
    if not args.no_collect:
        check_collect_config()
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="nginx-kafka-bench-"))
    os.chmod(workdir, 0o755)
    bodies = {"postdata": REPO / "nginx/postdata.json", "2kb": workdir / "event-2k.json"}
    make_2kb_body(bodies["2kb"])
    bodies["batch100"] = workdir / "batch100.json"
    bodies["batch100.lines"] = workdir / "batch100.lines"
    make_batch_body(bodies["batch100"], bodies["batch100.lines"])
    started = time.time()
    runner = Runner(s, workdir, bodies)
    results, paced_results, sweep, soak = [], [], [], None
    acked_results, replay, collect_results = [], None, []
    sizes, conns_sweep, lingers, callgrind = [], [], [], None
    cells = [(1, "postdata"), (1, "2kb"), (os.cpu_count() or 1, "postdata"),
             (os.cpu_count() or 1, "2kb")]
    extra = (() if args.no_metrics else METRICS_CONTESTANTS) + \
        (() if args.no_delivery else DELIVERY_CONTESTANTS)
    if VENDORED_NGINX.exists() and VENDORED_MODULE.exists():
        extra += VENDORED_CONTESTANTS
    else:
        log(f"no {VENDORED_NGINX} or {VENDORED_MODULE} (make build): the vendored nginx "
            "is left out")

    def contestants(cell):
        # The metrics and delivery contestants alternate with the others in the headline
        # cell's rounds.
        return CONTESTANTS + extra if cell == (1, "postdata") else CONTESTANTS

    try:
        log(f"{len(cells)} cells x {len(CONTESTANTS)} contestants x {s.rounds} round(s), "
            f"{s.duration} s each" + (f"; {', '.join(extra)} too in the headline cell"
                                      if extra else ""))
        for rnd in range(s.rounds):
            for workers, body in cells:
                names = contestants((workers, body))
                k = (rnd + cells.index((workers, body))) % len(names)
                for c in names[k:] + names[:k]:
                    r = runner.run(c, workers, body, s.duration)
                    r["round"] = rnd + 1
                    results.append(r)

        headline = summarize([r for r in results if r["workers"] == 1
                              and r["body"] == "postdata"])
        target = headline["ceiling"]["rps"] / 2
        # wrk paces in whole milliseconds: each connection waits 4 ms after each response.
        # One short run on the ceiling measures the real cycle (the wait, the round trip and
        # wrk's timer slack) and sets the number of connections for the target.
        delay_ms = 4
        probe = max(1, round(target * delay_ms / 1000))
        calib = runner.run("ceiling", 1, "postdata", 2, delay_ms=delay_ms, connections=probe)
        cycle_s = probe / max(calib["rps"], 1)
        conns = max(1, round(target * cycle_s))
        log(f"paced: {target:.0f} req/s target, {conns} connections x 1 req / {delay_ms} ms "
            f"(a cycle takes {cycle_s * 1000:.2f} ms)")
        for rnd in range(s.paced_rounds):
            k = rnd % len(CONTESTANTS)
            for c in CONTESTANTS[k:] + CONTESTANTS[:k]:
                r = runner.run(c, 1, "postdata", s.paced_duration, delay_ms=delay_ms,
                               connections=conns)
                r["round"] = rnd + 1
                r["paced"] = True
                paced_results.append(r)

        if not args.no_delivery:
            log(f"acked: {ACKED}, 1 worker, {' and '.join(map(str, ACKED_CONNECTIONS))} "
                f"connections, {s.acked_rounds} round(s) of {s.duration} s")
            for rnd in range(s.acked_rounds):
                order = ACKED_CONNECTIONS if rnd % 2 == 0 else ACKED_CONNECTIONS[::-1]
                for n in order:
                    r = runner.run(ACKED, 1, "postdata", s.duration, connections=n)
                    r["round"] = rnd + 1
                    r["acked"] = True
                    acked_results.append(r)
            log(f"replay: {s.replay_events:,} events through the spool")
            try:
                replay = runner.replay(s.replay_events)
            except RuntimeError as e:
                log(f"replay: {e}")
                replay = {"error": str(e)}

        if not args.no_collect:
            log(f"collect: 1 worker, {BATCH_EVENTS}-event batches, {s.collect_rounds} "
                f"round(s) of {s.duration} s")
            for rnd in range(s.collect_rounds):
                r = runner.run(COLLECT, 1, "batch100", s.duration,
                               connections=COLLECT_CONNECTIONS)
                r["round"] = rnd + 1
                r["collect"] = True
                collect_results.append(r)

        if s.sweep:
            variants = [
                [("linger.ms", "0")], [("linger.ms", "5")], [("linger.ms", "50")],
                [("compression.type", "none")], [("compression.type", "zstd")],
                [("compression.type", "gzip")],
                [("batch.size", "16384")], [("batch.num.messages", "100")],
                [("acks", "1")], [("delivery.report.only.error", "false")],
            ]
            for v in variants:
                try:
                    sweep.append(runner.run("module", 1, "postdata", s.sweep_duration,
                                            options=v))
                except RuntimeError as e:
                    log(f"sweep {v}: {e}")
                    sweep.append({"options": dict(v), "error": str(e)})

        if s.sweep:
            for size in SWEEP_BODIES:
                name = f"{size}b"
                bodies[name] = workdir / f"event-{size}.json"
                make_body(bodies[name], size)
                for c in ("ceiling", "module"):
                    r = runner.run(c, 1, name, s.sweep_duration)
                    r["sweep"] = "body"
                    sizes.append(r)
            for n in SWEEP_CONNECTIONS:
                for c in ("ceiling", "module"):
                    r = runner.run(c, 1, "postdata", s.sweep_duration, connections=n)
                    r["sweep"] = "connections"
                    conns_sweep.append(r)
            low = headline["ceiling"]["rps"] * SWEEP_LINGER_RATE
            low_conns = max(1, round(low * cycle_s))
            log(f"linger sweep: {low:.0f} req/s, {low_conns} connections x 1 req / "
                f"{delay_ms} ms")
            for rnd in range(s.linger_rounds):
                for linger in (None,) + SWEEP_LINGER_MS:
                    c, options = (("ceiling", ()) if linger is None
                                  else ("module", [("linger.ms", str(linger))]))
                    r = runner.run(c, 1, "postdata", s.sweep_duration, options=options,
                                   delay_ms=delay_ms, connections=low_conns)
                    r["sweep"] = "linger"
                    r["linger_ms"] = linger
                    r["round"] = rnd + 1
                    lingers.append(r)

        if VENDORED_NGINX.exists() and shutil.which("valgrind"):
            log("callgrind: instructions per request (vendored nginx)")
            out = workdir / "callgrind.json"
            n1, n2 = (500, 2500) if s.quick else (2000, 10000)
            cg = subprocess.run([sys.executable, str(BENCH / "callgrind.py"), "--n1", str(n1),
                                 "--n2", str(n2), "--json", str(out)],
                                capture_output=True, text=True)
            if cg.returncode == 0 and out.exists():
                callgrind = json.loads(out.read_text())
                callgrind["report"] = cg.stdout
            else:
                log(f"callgrind failed: {cg.stderr[-500:]}")

        log(f"soak: module, 1 worker, {s.soak} s")
        soak = runner.run("module", 1, "postdata", s.soak, soak_sample=s.soak_sample)
    except BaseException:
        # Keep what was measured for a look; latest.* stay as they were.
        partial = out_dir / f"{runner.run_id}.partial.json"
        partial.write_text(json.dumps({"runs": results + paced_results + acked_results
                                       + collect_results + sizes + conns_sweep + lingers,
                                       "sweep": sweep, "replay": replay}, indent=1) + "\n")
        log(f"stopped early; runs so far in {partial}")
        raise
    finally:
        if runner.broker:
            runner.broker.stop()

    def label(workers):
        return "auto" if workers != 1 else "1"

    report = {
        "run_id": runner.run_id,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "quick": s.quick,
        "machine": machine(),
        "settings": {"rounds": s.rounds, "warmup_s": s.warmup, "duration_s": s.duration,
                     "paced_rounds": s.paced_rounds, "paced_duration_s": s.paced_duration,
                     "soak_s": s.soak, "load_1_worker": runner.load(1),
                     "load_auto": runner.load(2), "module_options": PRODUCER_OPTIONS,
                     "metrics_contestants": [c for c in extra if c in METRICS_CONTESTANTS],
                     "delivery_contestants": [c for c in extra
                                              if c in DELIVERY_CONTESTANTS],
                     "scrape_hz": SCRAPE_HZ, "acked_rounds": s.acked_rounds,
                     "acked_connections": list(ACKED_CONNECTIONS),
                     "replay_events": s.replay_events, "sweep_s": s.sweep_duration},
        "cells": [],
    }
    for workers, body in cells:
        rs = [r for r in results if r["workers"] == workers and r["body"] == body]
        report["cells"].append({"workers": workers, "workers_label": label(workers),
                                "body": body, "summary": summarize(rs)})
    report["headline"] = headline
    for c in ALL_CONTESTANTS:
        if c in CONTESTANTS or c in headline:
            report[c] = headline.get(c)
    report["metrics"] = metrics_verdicts(headline)
    report["paced_target_rps"] = round(target)
    report["paced"] = summarize(paced_results)
    report["sweep"] = sweep
    report["soak"] = soak
    # librdkafka's default queue: 100,000 messages; each holds its payload and ~1 kB of
    # bookkeeping at most. A worker's RSS must stay below that plus its idle size.
    body_len = bodies["postdata"].stat().st_size
    bound_kb = headline["module"]["rss_kb_start"] + 100_000 * (body_len + 1024) // 1024
    report["rss_bound_kb"] = bound_kb
    report["delivery"] = delivery_verdicts(headline)
    report["acked"] = acked_summary(acked_results)
    report["replay"] = replay
    report["collect"] = collect_summary(collect_results)
    report["body_sweep"] = sweep_summary(sizes, "body")
    report["connection_sweep"] = sweep_summary(conns_sweep, "connections")
    report["linger_sweep"] = linger_summary(lingers)
    report["callgrind"] = callgrind
    report["sdk"] = sdk_size()
    report["goals"] = goals(headline, report["paced"], soak, bound_kb, report["acked"], replay,
                            report["collect"], report["sdk"], report["cells"],
                            report["callgrind"])
    report["runs"] = (results + paced_results + acked_results + collect_results + sizes
                      + conns_sweep + lingers)
    report["elapsed_s"] = round(time.time() - started, 1)

    name = f"{runner.run_id}{'-quick' if s.quick else ''}"
    (out_dir / f"{name}.json").write_text(json.dumps(report, indent=1) + "\n")
    shutil.copy(out_dir / f"{name}.json", out_dir / "latest.json")
    md = markdown(report)
    (out_dir / "latest.md").write_text(md)
    try:
        chart(report, out_dir / "latest.png")
    except subprocess.CalledProcessError as e:
        log(f"chart failed: {e}")
    if not s.quick and out_dir.resolve() == (BENCH / "results").resolve():
        update_readme(md)
    if replay and replay.get("stalled"):
        log(f"the replay stalled: its prefixes and spool stay in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    print(md)
    log(f"done in {report['elapsed_s']} s: {out_dir / (name + '.json')}, latest.json, "
        "latest.md, latest.png")


if __name__ == "__main__":
    main()
