-- Shared by the wrk scripts of this folder: per-thread random seeds, and a
-- `done` hook that writes the run's numbers as one JSON object to the file
-- named by the WRK_REPORT environment variable (nothing when it is unset).
-- benchmark/run.sh reads that file; wrk's own text output is kept beside it.
--
-- Latencies are in microseconds, as wrk records them. wrk is a closed-loop
-- generator: a slow answer delays the next request on its connection, so
-- its percentiles understate the tail (coordinated omission). run.sh
-- measures the tail with oha at fixed rates instead.

local report = {}

-- Without this every thread's Lua state starts from the same seed and
-- all threads ask for the same users in the same order.
local thread_counter = 0
function report.setup(thread)
  thread_counter = thread_counter + 1
  thread:set("thread_index", thread_counter)
end

function report.seed()
  local index = thread_index or 0
  math.randomseed(os.time() * 1000 + index * 7919)
  -- The first values after seeding LuaJIT's generator are poorly mixed.
  for _ = 1, 10 do math.random() end
end

function report.done(summary, latency, requests)
  local path = os.getenv("WRK_REPORT")
  if path == nil or path == "" then
    return
  end
  local e = summary.errors
  local out = assert(io.open(path, "w"))
  out:write(string.format(
    '{"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"mean":%.1f,"stdev":%.1f,"max":%d,' ..
    '"p50":%d,"p90":%d,"p99":%d,"p999":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.stdev, latency.max,
    latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9)))
  out:close()
end

return report
