-- wrk script: POST /v1/classify with one JSON embedding (the body file is
-- made by bench/wrk_server.sh), and p50/p99 latency printed at the end.
--   wrk -t2 -c8 -d10s -s bench/wrk_classify.lua http://127.0.0.1:PORT -- BODY.json
local body_file
function init(args)
  body_file = args[1]
  local f = assert(io.open(body_file, "rb"))
  wrk.body = f:read("*a")
  f:close()
  wrk.method = "POST"
  wrk.path = "/v1/classify"
  wrk.headers["Content-Type"] = "application/json"
end

function done(summary, latency, requests)
  io.write(string.format("requests %d, errors %d (status %d), %.1f q/s, p50 %.2f ms, p99 %.2f ms\n",
    summary.requests, summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.timeout,
    summary.errors.status, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
