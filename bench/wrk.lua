-- wrk script for the benchmark. The request is static (no request() function, so wrk
-- builds it once): POST, the body from BENCH_BODY, the topic from BENCH_TOPIC. With
-- BENCH_DELAY_MS each connection waits that long after each response, which paces the load.
-- done() prints one line, "BENCH {json}", with counts and latency percentiles in µs.
local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
wrk.headers["topic"] = os.getenv("BENCH_TOPIC")
-- kafka_collect's requests come from a registered page.
local origin = os.getenv("BENCH_ORIGIN")
if origin then
    wrk.headers["Origin"] = origin
end

local pause = tonumber(os.getenv("BENCH_DELAY_MS") or "")
if pause then
    function delay()
        return pause
    end
end

function done(summary, latency, requests)
    local e = summary.errors
    io.write(string.format(
        'BENCH {"requests":%d,"duration_us":%d,"bytes":%d,"non_2xx_3xx":%d,' ..
        '"connect_errors":%d,"read_errors":%d,"write_errors":%d,"timeouts":%d,' ..
        '"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d,"mean_us":%.1f}\n',
        summary.requests, summary.duration, summary.bytes, e.status,
        e.connect, e.read, e.write, e.timeout,
        latency:percentile(50), latency:percentile(90), latency:percentile(99),
        latency:percentile(99.9), latency.max, latency.mean))
end
