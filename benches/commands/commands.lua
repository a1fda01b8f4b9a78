-- wrk: device commands, POST /api/v1/devices/{prefix}{i}/commands over $DEVICES devices in turn,
-- setFanSpeed with a value from 0 to 5.
-- Usage: DEVICES=10000 wrk -t2 -c50 -d20s -s benches/commands/commands.lua URL
local devices = tonumber(os.getenv("DEVICES") or "10000")
local prefix = os.getenv("PREFIX") or "purifier-"
local counter = 0

function setup(thread)
  thread:set("offset", counter)
  counter = counter + 1
end

local n = 0
function request()
  n = n + 1
  local i = (n * 2 + (offset or 0)) % devices
  local path = string.format("/api/v1/devices/%s%05d/commands", prefix, i)
  local body = string.format('{"action": "setFanSpeed", "value": %d}', n % 6)
  return wrk.format("POST", path, { ["Content-Type"] = "application/json" }, body)
end
