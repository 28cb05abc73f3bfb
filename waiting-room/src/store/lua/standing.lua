-- Where a visitor stands; with mode "join", join if not there yet.
-- KEYS: 1 line (zset visitor->seq), 2 seen (zset visitor->ms), 3 sessions (zset visitor->expires ms),
--       4 admitted (hash visitor->admitted ms), 5 seq (counter)
-- ARGV: 1 visitor, 2 mode ("join" | "status"), 3 free_entry, 4 max_active, 5 session_ms,
--       6 abandon_after_ms, 7 queue_all ("1" | "0")
-- Returns {kind, a, b, join_kind}: kind "READY" (a = admitted ms, b = expires ms),
--   "WAITING" (a = position, b = waiting), "NOT_IN_QUEUE"; join_kind: existing | joined | free | rejoined
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local v = ARGV[1]

local exp = redis.call('ZSCORE', KEYS[3], v)
if exp then
  exp = tonumber(exp)
  if exp > now then
    local at = tonumber(redis.call('HGET', KEYS[4], v) or (exp - tonumber(ARGV[5])))
    return {'READY', at, exp, 'existing'}
  end
  redis.call('ZREM', KEYS[3], v)
  redis.call('HDEL', KEYS[4], v)
end

local lost = false
local rank = redis.call('ZRANK', KEYS[1], v)
if rank then
  local abandon = tonumber(ARGV[6])
  local seen = tonumber(redis.call('ZSCORE', KEYS[2], v) or '0')
  if abandon > 0 and seen < now - abandon then
    -- Away longer than the abandonment window: the place is gone.
    redis.call('ZREM', KEYS[1], v)
    redis.call('ZREM', KEYS[2], v)
    lost = true
  else
    redis.call('ZADD', KEYS[2], now, v)
    return {'WAITING', rank + 1, redis.call('ZCARD', KEYS[1]), 'existing'}
  end
end

if ARGV[2] ~= 'join' then
  return {'NOT_IN_QUEUE', 0, 0, 'existing'}
end

local waiting = redis.call('ZCARD', KEYS[1])
if waiting == 0 and ARGV[7] ~= '1' then
  local active = redis.call('ZCOUNT', KEYS[3], '(' .. now, '+inf')
  local free = tonumber(ARGV[3])
  local cap = tonumber(ARGV[4])
  if active < free and (cap == 0 or active < cap) then
    local expires = now + tonumber(ARGV[5])
    redis.call('ZADD', KEYS[3], expires, v)
    redis.call('HSET', KEYS[4], v, now)
    return {'READY', now, expires, 'free'}
  end
end

local seq = redis.call('INCR', KEYS[5])
redis.call('ZADD', KEYS[1], seq, v)
redis.call('ZADD', KEYS[2], now, v)
waiting = waiting + 1
if lost then
  return {'WAITING', waiting, waiting, 'rejoined'}
end
return {'WAITING', waiting, waiting, 'joined'}
