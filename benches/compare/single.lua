-- wrk: one reading per request, the same readings for both systems.
--   SYSTEM=aemos:    POST /api/v1/write  {"readings":[{"sensor","variable","value","time"}]}
--   SYSTEM=baseline: POST /api/v1/datastreams/token  (the seed's body:
--                    {"sensor","variableName","value":"26.123456","recievedAt":"...Z"})
-- Environment: SYSTEM, THREADS (must equal wrk -t), SENSORS (100), TOGGLE_EVERY (10),
-- PREFIX ("sensor-").
--
-- Readings. Thread i of THREADS writes the sensors i, i + THREADS, ... of SENSORS, round robin,
-- so no two threads write one sensor. The n-th reading of a sensor is 26.x (above the chains'
-- `temperature > 25`) when floor(n / TOGGLE_EVERY) is odd and 20.x otherwise: each sensor's
-- chain changes state every TOGGLE_EVERY readings of it, and each change is one notification
-- (the `warning` or the `normal` state).
--
-- Reading-to-notification latency. wrk calls request() when it is about to write the request,
-- and the wall clock is read there (clock_gettime through LuaJIT's FFI: os.time() has
-- seconds only). The time goes into the reading's `time`/`recievedAt` and also into the
-- value's six decimals: x.dddddd = that time in ms modulo 1,000,000 (1,000 s). Both systems
-- put the value the chain read in the notification (aemos: metadata.values.temperature; the
-- baseline likewise), so listen.js recovers the send time of the reading that caused each
-- notification from what it receives, whichever system and whatever it stamps itself.
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
  toggle = tonumber(os.getenv("TOGGLE_EVERY") or "10")
  local prefix = os.getenv("PREFIX") or "sensor-"
  names, counts = {}, {}
  for s = index, sensors - 1, threads do
    names[#names + 1] = string.format("%s%05d", prefix, s)
    counts[#counts + 1] = 0
  end
  assert(#names > 0, "more threads than sensors")
  cursor = 0
  headers = { ["Content-Type"] = "application/json" }
  path = system == "aemos" and "/api/v1/write" or "/api/v1/datastreams/token"
end

function request()
  cursor = cursor % #names + 1
  local n = counts[cursor]
  counts[cursor] = n + 1
  local t = now_ms()
  local base = (math.floor(n / toggle) % 2 == 1) and 26 or 20
  local value = string.format("%d.%06d", base, t % 1000000)
  local body
  if system == "aemos" then
    body = string.format('{"readings":[{"sensor":"%s","variable":"temperature","value":%s,"time":%d}]}',
      names[cursor], value, t)
  else
    local at = os.date("!%Y-%m-%dT%H:%M:%S", math.floor(t / 1000)) .. string.format(".%03dZ", t % 1000)
    body = string.format('{"sensor":"%s","variableName":"temperature","value":"%s","recievedAt":"%s"}',
      names[cursor], value, at)
  end
  return wrk.format("POST", path, headers, body)
end

-- One JSON line for compare.sh. errors.status counts responses with a status above 399.
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
