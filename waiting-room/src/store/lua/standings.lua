-- Standings of many visitors, read-only (the push path after every tick).
-- KEYS: 1 line, 2 sessions, 3 admitted
-- ARGV: visitors
-- Returns for each visitor three values: kind (0 not in queue, 1 waiting, 2 ready), a, b
-- (waiting: position, waiting; ready: admitted ms, expires ms).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local waiting = redis.call('ZCARD', KEYS[1])
local out = {}
for i = 1, #ARGV do
  local v = ARGV[i]
  local exp = redis.call('ZSCORE', KEYS[2], v)
  if exp and tonumber(exp) > now then
    out[#out + 1] = 2
    out[#out + 1] = tonumber(redis.call('HGET', KEYS[3], v) or '0')
    out[#out + 1] = tonumber(exp)
  else
    local rank = redis.call('ZRANK', KEYS[1], v)
    if rank then
      out[#out + 1] = 1
      out[#out + 1] = rank + 1
      out[#out + 1] = waiting
    else
      out[#out + 1] = 0
      out[#out + 1] = 0
      out[#out + 1] = 0
    end
  end
end
return out
