-- wrk script for a fixed number of requests (the replay run's spool fill), with one wrk
-- thread: bench/wrk.lua's request, and once BENCH_REQUESTS responses came, one line,
-- "BENCH-COUNT {json}", and the end of the process (wrk itself would sleep out its -d).
-- Requests still in flight on the other connections may be answered too: nginx's access
-- log, not this count, says how many events were accepted.
dofile(os.getenv("BENCH_SCRIPTS") .. "/wrk.lua")

local limit = assert(tonumber(os.getenv("BENCH_REQUESTS")), "BENCH_REQUESTS")
local seen = 0

function response(status, headers, body)
    seen = seen + 1
    if seen >= limit then
        io.write(string.format('BENCH-COUNT {"responses":%d}\n', seen))
        io.flush()
        os.exit(0)
    end
end
