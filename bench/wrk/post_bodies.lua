-- wrk script for bench_cds_hooks.py: POSTs the request bodies named on the command line (after `--`), one
-- after another per connection, and writes the latency summary as JSON to the file in env RG_WRK_OUT.
-- wrk is a C load generator: its CPU cost per request is a small fraction of a Python client's, which
-- matters when the load generator shares the server's cores.
wrk.method = "POST"

local bodies = {}
local count = 0
local next_index = 0

function init(args)
  for i, path in ipairs(args) do
    local f = assert(io.open(path, "rb"))
    bodies[i] = f:read("*a")
    f:close()
    count = i
  end
  assert(count > 0, "no request bodies given")
end

function request()
  next_index = next_index % count + 1
  return wrk.format(nil, nil, nil, bodies[next_index])
end

function done(summary, latency, requests)
  local out = assert(io.open(os.getenv("RG_WRK_OUT"), "w"))
  local e = summary.errors
  out:write(string.format(
    '{"requests": %d, "duration_us": %d, "bytes": %d, "errors_status": %d, "errors_connect": %d, ' ..
    '"errors_read": %d, "errors_write": %d, "errors_timeout": %d, "p50_us": %d, "p95_us": %d, ' ..
    '"p99_us": %d, "mean_us": %.1f, "max_us": %d}\n',
    summary.requests, summary.duration, summary.bytes, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.mean, latency.max))
  out:close()
end
