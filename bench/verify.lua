-- wrk script for `make bench`: POSTs JSON bodies (POST /v1/verify; bench/run.py passes -s).
--
-- BENCH_BODIES names a file of request bodies, one per line. With one body, wrk builds the request
-- once and resends it on every connection, its cheapest way to send. With several, they go out in
-- turn, for phases that spread the load over many keys; a request() function makes wrk call into
-- Lua for each request, so the requests are built in advance.

local bodies = {}

function init(args)
  local path = os.getenv("BENCH_BODIES")
  if path == nil or path == "" then
    error("BENCH_BODIES must name a file of request bodies, one per line")
  end
  for line in io.lines(path) do
    if #line > 0 then
      bodies[#bodies + 1] = line
    end
  end
  if #bodies == 0 then
    error(path .. " holds no request body")
  end
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.body = bodies[1]
  if #bodies > 1 then
    local requests = {}
    for i, body in ipairs(bodies) do
      requests[i] = wrk.format(nil, nil, nil, body)
    end
    local turn = 0
    -- wrk looks for request() once init() has run, so defining it here is enough.
    function request()
      turn = turn % #requests + 1
      return requests[turn]
    end
  end
end
