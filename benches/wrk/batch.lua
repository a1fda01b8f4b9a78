-- wrk: batches of readings to POST /api/v1/write, the body read from $BODY_FILE, with an
-- optional credential in $TOKEN.
-- Usage: BODY_FILE=body.json TOKEN=... wrk -t2 -c8 -d20s -s benches/wrk/batch.lua URL
local f = assert(io.open(os.getenv("BODY_FILE"), "rb"))
local body = f:read("*a")
f:close()
local token = os.getenv("TOKEN")
if token == "" then token = nil end

function request()
  local headers = { ["Content-Type"] = "application/json" }
  if token then headers["Authorization"] = "Bearer " .. token end
  return wrk.format("POST", "/api/v1/write", headers, body)
end
