-- wrk script: POST a small JSON order per request and count the answers by status.
-- Arguments after `--`: the path (default /api/orders), the mode (default 2pc) and a file
-- of logged-in users, one "<user_id> <token>" a line (infra/bench/load.py writes it).
-- Each order is qty 1 of a random SKU for a random one of those users (1..1000 without
-- the file) with a 1..100 cent red packet and no coupon, carrying that user's token, so
-- tens of thousands of them fit in the seeded stock and wallets.
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
  users = {}
  if args[3] then
    for line in io.lines(args[3]) do
      local user, token = line:match("^(%d+) (%S+)$")
      if user then
        table.insert(users, {tonumber(user), "Bearer " .. token})
      end
    end
  end
end

function request()
  local headers = {["Content-Type"] = "application/json"}
  local user = math.random(1, 1000)
  if #users > 0 then
    local pick = users[math.random(1, #users)]
    user, headers["Authorization"] = pick[1], pick[2]
  end
  local body = string.format(
    '{"user_id": %d, "items": [{"sku": "SKU-%04d", "qty": 1}], "red_packet_cents": %d, "mode": "%s"}',
    user, math.random(1, 100), math.random(1, 100), mode)
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
