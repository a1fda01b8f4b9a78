-- wrk: batches of readings (1,000 by default), the same readings for both systems.
--   SYSTEM=aemos:    POST /api/v1/write  {"readings":[...]}
--   SYSTEM=baseline: POST /api/v1/datastreams/batch  {"datastreams":[...]}, the baseline's
--                    batch route (the seeds have none; benches/baseline/README.md)
-- Environment: SYSTEM, THREADS (= wrk -t), QUIET_FILE, TOGGLING (10), SENSORS (100),
-- TOGGLE_EVERY (10), PREFIX ("sensor-").
--
-- A batch = TOGGLING readings of the toggling sensors (0 .. SENSORS-1, made as single.lua
-- makes them: values that cross `temperature > 25` every TOGGLE_EVERY readings of a sensor,
-- with the send time in their six decimals) followed by one of the quiet fragments of
-- QUIET_FILE (one line each, the readings of that system's format without brackets, written
-- by setup.js quiet): readings of the other sensors at values below the chains' threshold and
-- without a time (arrival time), which every chain evaluates and none fires on. The
-- fragments are taken in turn.
local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
  int clock_gettime(int clk_id, bench_timespec *tp);
]]
local ts = ffi.new("bench_timespec")
local function now_ms()
  ffi.C.clock_gettime(0, ts) -- CLOCK_REALTIME
  return tonumber(ts.tv_sec) * 1000 + math.floor(tonumber(ts.tv_nsec) / 1000000)
end

local next_index = 0
function setup(thread)
  thread:set("index", next_index)
  next_index = next_index + 1
end

function init(args)
  system = os.getenv("SYSTEM") or "aemos"
  assert(system == "aemos" or system == "baseline", "SYSTEM must be aemos or baseline")
  local threads = tonumber(os.getenv("THREADS") or "2")
  local sensors = tonumber(os.getenv("SENSORS") or "100")
  toggling = tonumber(os.getenv("TOGGLING") or "10")
  toggle = tonumber(os.getenv("TOGGLE_EVERY") or "10")
  local prefix = os.getenv("PREFIX") or "sensor-"
  names, counts = {}, {}
  for s = index, sensors - 1, threads do
    names[#names + 1] = string.format("%s%05d", prefix, s)
    counts[#counts + 1] = 0
  end
  assert(#names > 0, "more threads than sensors")
  cursor = 0
  quiet = {}
  local f = assert(io.open(assert(os.getenv("QUIET_FILE"), "QUIET_FILE"), "rb"))
  for line in f:lines() do
    if #line > 0 then quiet[#quiet + 1] = line end
  end
  f:close()
  assert(#quiet > 0, "QUIET_FILE is empty")
  q = index % #quiet
  headers = { ["Content-Type"] = "application/json" }
  if system == "aemos" then
    path, open = "/api/v1/write", '{"readings":['
  else
    path, open = "/api/v1/datastreams/batch", '{"datastreams":['
  end
end

local function reading()
  cursor = cursor % #names + 1
  local n = counts[cursor]
  counts[cursor] = n + 1
  local t = now_ms()
  local base = (math.floor(n / toggle) % 2 == 1) and 26 or 20
  local value = string.format("%d.%06d", base, t % 1000000)
  if system == "aemos" then
    return string.format('{"sensor":"%s","variable":"temperature","value":%s,"time":%d}',
      names[cursor], value, t)
  end
  local at = os.date("!%Y-%m-%dT%H:%M:%S", math.floor(t / 1000)) .. string.format(".%03dZ", t % 1000)
  return string.format('{"sensor":"%s","variableName":"temperature","value":"%s","recievedAt":"%s"}',
    names[cursor], value, at)
end

function request()
  local parts = { open }
  for i = 1, toggling do
    parts[#parts + 1] = reading()
    parts[#parts + 1] = ","
  end
  q = q % #quiet + 1
  parts[#parts + 1] = quiet[q]
  parts[#parts + 1] = "]}"
  return wrk.format("POST", path, headers, table.concat(parts))
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"status_errors":%d,"connect_errors":%d,' ..
    '"read_errors":%d,"write_errors":%d,"timeouts":%d,"latency_p50_us":%d,' ..
    '"latency_p90_us":%d,"latency_p99_us":%d,"latency_mean_us":%.1f,"latency_max_us":%d}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean,
    latency.max))
end
