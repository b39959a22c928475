-- wrk reporter: one JSON line with exact figures (latencies in microseconds), read by
-- benches/load.py. wrk's own text report is printed too.

-- WRK_PACE_MS: each connection waits this long between a response and its next request,
-- so every server gets about the same request rate (the same-load table).
local pace_ms = tonumber(os.getenv("WRK_PACE_MS") or "0") or 0
if pace_ms > 0 then
  delay = function()
    return pace_ms
  end
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"mean":%.1f,"stdev":%.1f,"max":%d,"p50":%d,"p75":%d,"p90":%d,"p99":%d,"p999":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.stdev, latency.max,
    latency:percentile(50), latency:percentile(75), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9)))
end
