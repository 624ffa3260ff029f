#!/usr/bin/env python3
"""The benchmark's scraper: GETs the module's metrics endpoint on one keep-alive connection
of its own, RATE times a second for SECONDS, as Prometheus would under load. run.py starts it
beside wrk (pinned like wrk) for the `module+scrape` contestant.

A scrape counts as answered when nginx replies 200 with Prometheus text that parses (every
line a comment or `name{labels} value [timestamp]`, at least one nginx_kafka_ sample);
anything else (refused, timed out, another status, a body that does not parse) counts as
failed, and the connection is opened again for the next one. Ticks it cannot keep (it fell
more than one period behind) are skipped, not bunched, so there are never more than
RATE x SECONDS attempts.

Usage: bench/scrape.py --port PORT [--path /metrics] [--rate 10] [--seconds 10]
Prints one line, "SCRAPE {json}", with the counts and the scrapes' latencies.
"""

import argparse
import http.client
import json
import re
import time

SAMPLE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*(\{.*\})?[ \t]+(\S+)([ \t]+-?\d+)?")


def parse_error(text):
    """Why this is not Prometheus text with at least one nginx_kafka_ sample, or None."""
    samples = 0
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        m = SAMPLE.fullmatch(line)
        if not m:
            return f"line {n} is not a sample"
        try:
            float(m.group(2))
        except ValueError:
            return f"line {n} has no number"
        samples += line.startswith("nginx_kafka_")
    return None if samples else "no nginx_kafka_ sample"


def scrape(port, path, rate, seconds, timeout):
    result = {"attempts": 0, "ok": 0, "failed": 0, "skipped": 0, "reasons": {},
              "bytes_last": 0, "samples_last": 0}
    latencies = []
    conn = None
    period = 1.0 / rate
    start = time.monotonic()
    limit = int(rate * seconds)
    tick = 0
    while tick < limit:
        due = start + tick * period
        now = time.monotonic()
        if now < due:
            time.sleep(due - now)
        elif now - due > period:
            behind = int((now - due) / period)
            result["skipped"] += behind
            tick += behind
            continue
        tick += 1
        result["attempts"] += 1
        t0 = time.monotonic()
        reason = None
        try:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
            conn.request("GET", path)
            resp = conn.getresponse()
            body = resp.read()
            if resp.status != 200:
                reason = f"status {resp.status}"
            else:
                reason = parse_error(body.decode("utf-8", "replace"))
                if reason is None:
                    result["bytes_last"] = len(body)
                    result["samples_last"] = sum(
                        1 for line in body.decode("utf-8", "replace").splitlines()
                        if line and not line.startswith("#"))
            if resp.will_close:
                conn.close()
                conn = None
        except (OSError, http.client.HTTPException) as e:
            reason = type(e).__name__
            if conn is not None:
                conn.close()
            conn = None
        latencies.append(time.monotonic() - t0)
        if reason is None:
            result["ok"] += 1
        else:
            result["failed"] += 1
            result["reasons"][reason] = result["reasons"].get(reason, 0) + 1
    if conn is not None:
        conn.close()
    latencies.sort()
    if latencies:
        result["p50_ms"] = round(latencies[len(latencies) // 2] * 1000, 2)
        result["max_ms"] = round(latencies[-1] * 1000, 2)
    result["seconds"] = round(time.monotonic() - start, 2)
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--path", default="/metrics")
    ap.add_argument("--rate", type=float, default=10)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--timeout", type=float, default=1.0, help="per scrape, in seconds")
    args = ap.parse_args()
    result = scrape(args.port, args.path, args.rate, args.seconds, args.timeout)
    print("SCRAPE " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
