-- wrk script for bench/embed.py: POST /v1/embeddings with one text per request, cycling through
-- WRK_TEXTS (a file of JSON string literals, one per line); prints one JSON summary line.
local texts = {}
for line in io.lines(os.getenv("WRK_TEXTS")) do texts[#texts + 1] = line end
local model = os.getenv("WRK_MODEL")
local counter = 0

request = function()
  counter = counter + 1
  local body = '{"model":"' .. model .. '","input":' .. texts[(counter % #texts) + 1] .. '}'
  return wrk.format("POST", "/v1/embeddings", {["Content-Type"] = "application/json"}, body)
end

done = function(summary, latency, requests)
  local errors = summary.errors.status + summary.errors.connect + summary.errors.read
    + summary.errors.write + summary.errors.timeout
  io.write(string.format(
    '{"requests_per_s": %f, "p50_ms": %f, "p99_ms": %f, "errors": %d, "calls_total": %d}\n',
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, errors, summary.requests))
end
