-- wrk: one reading per request to POST /api/v1/datastreams/token (the seed's single reading),
-- with a device token. Each connection writes its own variable so requests differ.
-- Usage: TOKEN=adt_... wrk -t2 -c50 -d20s -s benches/wrk/single-reading.lua http://127.0.0.1:3000
local token = os.getenv("TOKEN")
if token == "" then token = nil end
-- Without a device token (dev mode) the reading names its sensor.
local sensor = os.getenv("SENSOR")
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("id", counter)
end

function init(args)
  n = 0
end

function request()
  n = n + 1
  local body
  if sensor then
    body = string.format('{"value": "%d.5", "variableName": "v%d", "sensor": "%s"}', n % 100, id, sensor)
  else
    body = string.format('{"value": "%d.5", "variableName": "v%d"}', n % 100, id)
  end
  local headers = { ["Content-Type"] = "application/json" }
  if token then headers["Authorization"] = "Bearer " .. token end
  return wrk.format("POST", "/api/v1/datastreams/token", headers, body)
end
