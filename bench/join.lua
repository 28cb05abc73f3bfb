-- wrk script: every request is a new visitor joining (no cookie sent), each
-- from its own address. The bench's proxy trusts 127.0.0.1
-- (server.trusted_proxies), as a proxy behind a CDN would trust the CDN, so
-- the X-Forwarded-For address is the client its per-client limits count:
-- one join per address, as when many visitors arrive through a CDN.
local thread_ids = 0

function setup(thread)
  thread:set("id", thread_ids)
  thread_ids = thread_ids + 1
end

local n = 0

function request()
  -- Threads interleave (up to 64 of them): every address of a run is distinct.
  n = n + 1
  local k = n * 64 + id
  local address = string.format("10.%d.%d.%d", math.floor(k / 65536) % 256, math.floor(k / 256) % 256, k % 256)
  return wrk.format("POST", nil, { ["Accept"] = "application/json", ["X-Forwarded-For"] = address })
end
