-- Signed generic webhooks for wrk: a few pre-signed ~1 KiB bodies (BENCH_BODIES, one
-- "signature body" pair per line), each request from a new tenant, so every request makes a
-- new job (the dedup key is per tenant) without signing in Lua. BENCH_RUN (0..65535) keeps
-- the tenants of one wrk run apart from those of the runs before it.
local pairs_ = {}
local counter = 0
local thread_id = 0
local run = tonumber(os.getenv("BENCH_RUN") or "0")

function setup(thread)
  thread_id = thread_id + 1
  thread:set("tid", thread_id)
end

function init(args)
  for line in io.lines(os.getenv("BENCH_BODIES")) do
    local sig, body = line:match("^(%x+) (.*)$")
    table.insert(pairs_, {sig, body})
  end
end

-- BENCH_DELAY_MS paces each connection: connections / delay = the offered rate.
local pace = os.getenv("BENCH_DELAY_MS")
if pace then
  delay = function() return tonumber(pace) end
end

request = function()
  counter = counter + 1
  local p = pairs_[(counter % #pairs_) + 1]
  local tenant = string.format("%08x-%04x-4000-8000-%012x", tid, run, counter)
  return wrk.format("POST", "/webhooks/generic", {
    ["Content-Type"] = "application/json",
    ["X-Signature"] = p[1],
    ["X-Tenant-Id"] = tenant,
  }, p[2])
end
