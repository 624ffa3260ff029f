#!/usr/bin/env python3
"""Instructions per request under callgrind: the module against nginx's own ceiling.

Deterministic where timings are not: nginx (build/sbin/nginx, one process, master_process
off) runs under valgrind's callgrind with the module loaded; `ab -k -c 1` posts
postdata.json N times to /ceiling (`return 204`: the body read and discarded) or to
/module (kafka_ingest), against the local mock broker (kafka-dev-broker). Each contestant
runs twice, with N1 and N2 requests; (Ir(N2) - Ir(N1)) / (N2 - N1) is its cost per request,
start-up and exit cancelled out. Threads are counted apart (--separate-threads): nginx's
own (the event loop, where the handler runs) and librdkafka's (its broker thread batches,
compresses and sends).

Batching is fixed by count, not by time (DECISIONS.md, perf): linger.ms 10000 and
batch.num.messages BATCH, so that the per-batch costs (LZ4 state, buffers) are the same in
every run whatever the machine's speed, and reported apart: per event with BATCH events per
batch, and the difference with batches of 1.

Usage: bench/callgrind.py [--n1 2000] [--n2 10000] [--batch 1000] [--top 25]
       [--nginx build/sbin/nginx] [--module build/modules/ngx_http_kafka_module.so]
       [--option NAME VALUE]... [--no-batches-of-1] [--json OUT]
"""

import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from run import free_port, wait_listen  # bench/run.py

REPO = Path(__file__).resolve().parent.parent
TOPIC = "bench-cg"


CONF = """\
load_module {module};
master_process off;
daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log notice;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    client_body_buffer_size 16k;
    keepalive_requests 1000000;
    kafka_brokers 127.0.0.1:{broker};
{options}    server {{
        listen 127.0.0.1:{port};
        location = /ceiling {{ return 204; }}
        location = /module {{ kafka_ingest; kafka_topic $http_topic; kafka_allowed_topics bench-*; }}
    }}
}}
"""


def run(args, broker, path, n, batch, work):
    """Ir per thread (main first) of nginx serving n requests to path."""
    prefix = Path(tempfile.mkdtemp(prefix="cg-", dir=work))
    (prefix / "body").mkdir()
    port = free_port()
    options = {"linger.ms": "10000", "batch.num.messages": str(batch), "compression.type": "lz4"}
    options.update(args.option)
    lines = "".join(f"    kafka_option {k} {v};\n" for k, v in options.items())
    (prefix / "nginx.conf").write_text(CONF.format(
        module=args.module, prefix=prefix, broker=broker, options=lines, port=port))
    out = prefix / "callgrind.out"
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--separate-threads=yes",
         f"--callgrind-out-file={out}", args.nginx, "-p", str(prefix), "-c",
         str(prefix / "nginx.conf"), "-e", str(prefix / "error.log")],
        stdout=subprocess.DEVNULL, stderr=open(prefix / "valgrind.log", "w"))
    wait_listen(port, proc, "nginx under callgrind", timeout=60)
    time.sleep(2)  # the producer's first metadata
    ab = subprocess.run(
        ["ab", "-q", "-k", "-c", "1", "-n", str(n), "-p", str(REPO / "nginx/postdata.json"),
         "-T", "application/json", "-H", f"topic: {TOPIC}",
         f"http://127.0.0.1:{port}{path}"],
        capture_output=True, text=True)
    if ab.returncode != 0:
        sys.exit(f"ab: {ab.stderr}")
    failed = int(re.search(r"Failed requests:\s+(\d+)", ab.stdout).group(1))
    non2xx = re.search(r"Non-2xx responses:\s+(\d+)", ab.stdout)
    if failed or non2xx:
        sys.exit(f"ab to {path}: {failed} failed, {non2xx.group(1) if non2xx else 0} non-2xx")
    # A graceful stop: the worker flushes what it queued (linger.ms is long), then exits.
    proc.send_signal(3)  # SIGQUIT
    proc.wait(timeout=120)
    threads = {}
    for f in sorted(glob.glob(f"{out}*")):
        m = re.search(r"-(\d+)$", f)
        text = Path(f).read_text(errors="replace")
        total = re.search(r"^(?:summary|totals):\s+(\d+)", text, re.M)
        if m and total:
            threads[int(m.group(1))] = (int(total.group(1)), f)
    if not threads:
        sys.exit(f"no callgrind output in {prefix}")
    return [threads[k] for k in sorted(threads)], prefix


def functions(path):
    """Self cost per function of a callgrind file."""
    text = subprocess.run(["callgrind_annotate", "--threshold=100", "--auto=no", path],
                          capture_output=True, text=True).stdout
    costs = {}
    for line in text.splitlines():
        m = re.match(r"\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(.*)", line)
        if m and "PROGRAM TOTALS" not in line and not m.group(2).startswith(("=>", "<", "*")):
            name = m.group(2).strip()
            # file:function [object] -> function [object]
            name = re.sub(r"^\S*:(?=[^:\s])", "", name, count=1) if ":" in name else name
            costs[name] = costs.get(name, 0) + int(m.group(1).replace(",", ""))
    return costs


def per_request(small, big, n):
    """Per-request self cost of each function: the difference of two runs."""
    a, b = functions(small), functions(big)
    return {f: (b.get(f, 0) - a.get(f, 0)) / n for f in set(a) | set(b)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n1", type=int, default=2000)
    ap.add_argument("--n2", type=int, default=10000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--nginx", default=str(REPO / "build/sbin/nginx"))
    ap.add_argument("--module", default=str(REPO / "build/modules/ngx_http_kafka_module.so"))
    ap.add_argument("--json", help="write the figures here as JSON")
    ap.add_argument("--option", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                    help="a producer property for both contestants (kafka_option), to compare "
                         "settings by their instructions")
    ap.add_argument("--no-batches-of-1", action="store_true",
                    help="skip the runs that measure a batch's own cost")
    args = ap.parse_args()
    if not shutil.which("valgrind"):
        sys.exit("valgrind is not installed (apt-get install valgrind)")
    work = tempfile.mkdtemp(prefix="nginx-kafka-callgrind-")
    broker_port = free_port()
    broker = subprocess.Popen([str(REPO / "build/bin/kafka-dev-broker"), "--port",
                               str(broker_port), "--topic", f"{TOPIC}:1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listen(broker_port, broker, "kafka-dev-broker")
        figures = {}
        files = {}
        contestants = [("ceiling", "/ceiling", args.batch), ("module", "/module", args.batch),
                       ("module, batches of 1", "/module", 1)]
        for name, path, batch in contestants[:2 if args.no_batches_of_1 else 3]:
            small, _ = run(args, broker_port, path, args.n1, batch, work)
            big, prefix = run(args, broker_port, path, args.n2, batch, work)
            per = [(b[0] - s[0]) / (args.n2 - args.n1) for s, b in zip(small, big)]
            figures[name] = {"main": per[0], "other_threads": sum(per[1:]),
                             "total": sum(per)}
            files[name] = (small, big)
            print(f"{name:>22}: {per[0]:9,.0f} Ir/request in nginx's thread, "
                  f"{sum(per[1:]):9,.0f} in librdkafka's, {sum(per):9,.0f} in all",
                  flush=True)
        c, m = figures["ceiling"], figures["module"]
        one = figures.get("module, batches of 1")
        extra = {k: m[k] - c[k] for k in c}
        per_batch = one["total"] - m["total"] if one else None
        print(f"\nThe module's extra instructions per request over the ceiling "
              f"(batches of {args.batch}): {extra['main']:,.0f} in nginx's thread, "
              f"{extra['other_threads']:,.0f} in librdkafka's, {extra['total']:,.0f} in all"
              + (f"; a batch costs about {per_batch * args.batch / max(args.batch - 1, 1):,.0f} "
                 f"more (batches of 1 against {args.batch})." if one else "."))
        n = args.n2 - args.n1
        fns = {}
        for name in ("ceiling", "module"):
            (small, big) = files[name]
            fns[name] = per_request(small[0][1], big[0][1], n)
            others = [per_request(s[1], b[1], n) for s, b in zip(small[1:], big[1:])]
            fns[name + " (librdkafka)"] = {f: sum(o.get(f, 0) for o in others)
                                           for o in others for f in o}
        diff = {f: fns["module"].get(f, 0) - fns["ceiling"].get(f, 0)
                for f in set(fns["module"]) | set(fns["ceiling"])}
        print(f"\nnginx's thread: the module's extra instructions per request by function "
              f"(module - ceiling, self cost), the top {args.top}:")
        for f, ir in sorted(diff.items(), key=lambda kv: -abs(kv[1]))[:args.top]:
            print(f"{ir:10,.1f}  {f}")
        print(f"\nlibrdkafka's threads, module (batches of {args.batch}), the top {args.top}:")
        lib = fns["module (librdkafka)"]
        for f, ir in sorted(lib.items(), key=lambda kv: -abs(kv[1]))[:args.top]:
            print(f"{ir:10,.1f}  {f}")
        if args.json:
            Path(args.json).write_text(json.dumps(
                {"n1": args.n1, "n2": args.n2, "batch": args.batch, "figures": figures,
                 "extra": extra, "per_batch": per_batch}, indent=1) + "\n")
    finally:
        broker.terminate()
        broker.wait()
        if not os.environ.get("KEEP"):
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
