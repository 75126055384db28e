-- wrk script for `make bench` (bench/README.md): what wrk sends, and what it reads back.
--
-- BENCH_BODIES: a file of JSON bodies, one a line, POSTed in turn (without it: GET). The `code` of
-- every POST's answer is counted, since /v1/verify answers 200 whatever its verdict.
-- BENCH_DEADLINE (the accuracy run, one connection per thread): a CLOCK_MONOTONIC time in seconds
-- past which each thread stops at its next answer, rather than abandon a request in flight at the
-- end of wrk's -d; its requests are timed, for the admitted ones' (sent, answered) times.
-- done() prints wrk's figures and the threads' counts as one line of JSON.

local ffi = require("ffi")
ffi.cdef([[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clock, bench_timespec *now);
]])
local CLOCK_MONOTONIC = 1
local clock = ffi.new("bench_timespec")

local function now()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, clock)
  return tonumber(clock.tv_sec) + tonumber(clock.tv_nsec) * 1e-9
end

-- Globals of each thread's own Lua state, which done() reads with thread:get().
codes, admitted = {}, {}

local function count(body, status)
  local code = string.match(body, '"code":"([%w_]+)"') or ("HTTP " .. status)
  codes[code] = (codes[code] or 0) + 1
  return code
end

local sent, deadline, prebuilt

local function timed_request()
  sent = now()
  first = first or sent
  in_flight = true
  return prebuilt
end

local function timed_response(status, headers, body)
  local answered = now()
  in_flight, last = false, answered
  if count(body, status) == "VALID" then
    admitted[#admitted + 1] = sent
    admitted[#admitted + 1] = answered
  end
  if answered >= deadline then
    wrk.thread:stop()
  end
end

local threads = {}

function setup(thread)
  threads[#threads + 1] = thread
end

-- wrk looks for request() and response() once init() has run: defining them here is enough.
function init(args)
  local path = os.getenv("BENCH_BODIES")
  if path == nil then
    return
  end
  local bodies = {}
  for line in io.lines(path) do
    bodies[#bodies + 1] = line
  end
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  -- One body: wrk builds its request once and resends it, its cheapest way to send.
  wrk.body = bodies[1]
  response = function(status, headers, body)
    count(body, status)
  end
  if #bodies > 1 then
    -- Built in advance: request() is called for every request.
    local requests, turn = {}, 0
    for i, body in ipairs(bodies) do
      requests[i] = wrk.format(nil, nil, nil, body)
    end
    request = function()
      turn = turn % #requests + 1
      return requests[turn]
    end
  end
  deadline = tonumber(os.getenv("BENCH_DEADLINE"))
  if deadline ~= nil then
    prebuilt = wrk.format()
    request, response = timed_request, timed_response
  end
end

-- A time for JSON: null where no thread took one.
local function stamp(t)
  return math.abs(t) == math.huge and "null" or string.format("%.6f", t)
end

function done(summary, latency, requests)
  local total, times, unanswered = {}, {}, 0
  local earliest, latest = math.huge, -math.huge
  for _, thread in ipairs(threads) do
    for code, n in pairs(thread:get("codes")) do
      total[code] = (total[code] or 0) + n
    end
    for _, t in ipairs(thread:get("admitted")) do
      times[#times + 1] = stamp(t)
    end
    unanswered = unanswered + (thread:get("in_flight") and 1 or 0)
    earliest = math.min(earliest, thread:get("first") or math.huge)
    latest = math.max(latest, thread:get("last") or -math.huge)
  end
  local counted = {}
  for code, n in pairs(total) do
    counted[#counted + 1] = string.format('"%s": %d', code, n)
  end
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "seconds": %.6f, "errors": %d, "p50_us": %d, "p99_us": %d, "codes": {%s}, '
      .. '"first": %s, "last": %s, "unanswered": %d, "admitted": [%s]}\n',
    summary.requests, summary.duration / 1e6, e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(99), table.concat(counted, ", "),
    stamp(earliest), stamp(latest), unanswered, table.concat(times, ", ")
  ))
end
