-- A purchase ended a visitor's session: stop counting it toward max_active
-- and record that the admission's tokens are revoked, for every instance.
-- KEYS: 1 sessions (zset visitor->expires ms), 2 admitted (hash visitor->admitted ms),
--       3 revoked (hash visitor->iat s of the last revoked admission),
--       4 revoked_until (zset visitor->ms until which the revocation is kept),
--       5 pending, 6 noshow (arrival tracking, see release.lua)
-- ARGV: 1 visitor, 2 iat (s) of the token whose session ends, 3 keep until (ms),
--       4 pub/sub channel
-- Returns 1 if a live session ended, 0 if it had already.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- Forget revocations whose tokens have all expired.
for _, old in ipairs(redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now)) do
  redis.call('HDEL', KEYS[3], old)
end
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)

local v = ARGV[1]
local iat = tonumber(ARGV[2])
local ended = 0
-- Only that admission's session: a later one (the visitor queued again) stays.
local at = redis.call('HGET', KEYS[2], v)
if at and math.floor(tonumber(at) / 1000) <= iat then
  if redis.call('ZREM', KEYS[1], v) == 1 then
    ended = 1
  end
  redis.call('HDEL', KEYS[2], v)
  redis.call('ZREM', KEYS[5], v)
  redis.call('ZREM', KEYS[6], v)
end
local before = tonumber(redis.call('HGET', KEYS[3], v) or '-1')
if iat > before then
  redis.call('HSET', KEYS[3], v, iat)
end
local until_ms = tonumber(ARGV[3])
local kept = tonumber(redis.call('ZSCORE', KEYS[4], v) or '0')
if until_ms > kept then
  redis.call('ZADD', KEYS[4], until_ms, v)
end
redis.call('PUBLISH', ARGV[4], 'revoke ' .. v .. ' ' .. iat .. ' ' .. until_ms)
return ended
