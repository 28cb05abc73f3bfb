-- Draw a queue's lottery, once (see lottery.rs for the rule, store/mod.rs for the semantics).
-- KEYS: 1 line (zset visitor->seq), 2 seen (zset visitor->ms), 3 entrants (set), 4 lottery (hash:
--       seed, committed_at, drawn_at, order, entrants)
-- ARGV: 1 opens_at_ms, 2 the public ids in drawn order (JSON, published), 3 pub/sub channel
--       ("" = don't publish), 4.. the entrants in drawn order
-- Returns "drawn" (this call drew), "already" (drawn before), "early" (the store's clock is before
-- opens_at), or "changed" (the entrants given are not the set's, or the lottery has no seed).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('HEXISTS', KEYS[4], 'drawn_at') == 1 then
  return 'already'
end
if now < tonumber(ARGV[1]) then
  return 'early'
end
local count = #ARGV - 3
if redis.call('HEXISTS', KEYS[4], 'seed') == 0 or redis.call('SCARD', KEYS[3]) ~= count then
  return 'changed'
end
-- The entrants still in line keep the set of sequence numbers they hold,
-- handed out again in drawn order. Scores stay the strings Redis gave: a
-- sequence number has 16 digits, more than Lua prints a number with.
local members, scores = {}, {}
for i = 4, #ARGV do
  if redis.call('SISMEMBER', KEYS[3], ARGV[i]) == 0 then
    return 'changed'
  end
  local s = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if s then
    members[#members + 1] = ARGV[i]
    scores[#scores + 1] = s
  end
end
table.sort(scores, function(a, b) return tonumber(a) < tonumber(b) end)
for i = 1, #members do
  redis.call('ZADD', KEYS[1], scores[i], members[i])
  redis.call('ZADD', KEYS[2], now, members[i])
end
redis.call('HSET', KEYS[4], 'drawn_at', now, 'order', ARGV[2], 'entrants', count)
if ARGV[3] ~= '' then
  redis.call('PUBLISH', ARGV[3], 'drawn')
end
return 'drawn'
