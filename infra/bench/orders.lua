-- wrk script: POST a small JSON order per request and count the answers by status.
-- Arguments after `--`: the path (default /api/orders) and the mode (default 2pc).
-- Each order is qty 1 of a random SKU for a random user with a 1..100 cent red packet
-- and no coupon, so tens of thousands of them fit in the seeded stock and wallets.
-- `done` prints one line "BENCH {json}" that infra/bench/load.py parses.

local threads = {}
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("id", counter)
  table.insert(threads, thread)
end

function init(args)
  path = args[1] or "/api/orders"
  mode = args[2] or "2pc"
  statuses = {}
  math.randomseed(os.time() * 1000 + id)
  headers = {["Content-Type"] = "application/json"}
end

function request()
  local body = string.format(
    '{"user_id": %d, "items": [{"sku": "SKU-%04d", "qty": 1}], "red_packet_cents": %d, "mode": "%s"}',
    math.random(1, 1000), math.random(1, 100), math.random(1, 100), mode)
  return wrk.format("POST", path, headers, body)
end

function response(status, headers, body)
  local key = tostring(status)
  statuses[key] = (statuses[key] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do
      total[status] = (total[status] or 0) + n
    end
  end
  local parts = {}
  for status, n in pairs(total) do
    table.insert(parts, string.format('"%s": %d', status, n))
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests": %d, "duration_us": %d, "statuses": {%s}, ' ..
    '"socket_errors": {"connect": %d, "read": %d, "write": %d, "timeout": %d}, ' ..
    '"latency_ms": {"p50": %.3f, "p95": %.3f, "p99": %.3f, "max": %.3f}}\n',
    summary.requests, summary.duration, table.concat(parts, ", "),
    e.connect, e.read, e.write, e.timeout,
    latency:percentile(50) / 1000, latency:percentile(95) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000))
end
