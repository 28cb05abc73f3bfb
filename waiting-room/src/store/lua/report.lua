-- One instance's measurements of a queue's admitted traffic since its previous
-- report, added to the window the next tick closes (see release.lua).
-- KEYS: 1 signals (hash: samples, errors, arrived, b<bucket> -> count), 2 inflight (hash:
--       instance -> "<in flight> <ms>"), 3 pending (zset: released visitor -> admission ms),
--       4 noshow (zset: no-show -> session end ms), 5 admitted (hash: visitor -> admission ms)
-- ARGV: 1 instance, 2 in flight now, 3 samples, 4 errors, 5 number of buckets B,
--       then B pairs (bucket, count), then pairs (visitor, token iat in s) of arrivals
-- Returns the number of arrivals matched with an admission.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2] .. ' ' .. now)
local samples, errors = tonumber(ARGV[3]), tonumber(ARGV[4])
if samples > 0 then
  redis.call('HINCRBY', KEYS[1], 'samples', samples)
end
if errors > 0 then
  redis.call('HINCRBY', KEYS[1], 'errors', errors)
end
local i = 6
for _ = 1, tonumber(ARGV[5]) do
  redis.call('HINCRBY', KEYS[1], 'b' .. ARGV[i], ARGV[i + 1])
  i = i + 2
end
-- An arrival counts for the admission its token belongs to: a token of an
-- earlier admission says nothing about the current one.
local arrived = 0
while i < #ARGV do
  local v, iat = ARGV[i], tonumber(ARGV[i + 1])
  i = i + 2
  local at = redis.call('HGET', KEYS[5], v)
  if at and iat and iat * 1000 >= tonumber(at) - 1000 then
    arrived = arrived + redis.call('ZREM', KEYS[3], v) + redis.call('ZREM', KEYS[4], v)
  end
end
if arrived > 0 then
  redis.call('HINCRBY', KEYS[1], 'arrived', arrived)
end
return arrived
