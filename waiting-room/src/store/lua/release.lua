-- Release the next batch of a queue if a tick is due. Every instance calls this;
-- the tick marker read and written here, with Redis TIME, makes releases of all
-- instances at least tick_ms apart, so any window of tick_ms holds at most N.
-- KEYS: 1 line, 2 seen, 3 sessions, 4 admitted, 5 tick (hash: last_ms, tick, released, abandoned)
-- ARGV: 1 n, 2 tick_ms, 3 session_ms, 4 max_active, 5 abandon_after_ms, 6 paused ("1"|"0"),
--       7 pub/sub channel ("" = don't publish)
-- Returns {ticked, tick, now, next_due_ms, abandoned, waiting, active, released visitors...}
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local tick_ms = tonumber(ARGV[2])
local CHUNK = 1000

local function count_active()
  return redis.call('ZCOUNT', KEYS[3], '(' .. now, '+inf')
end

local last = redis.call('HGET', KEYS[5], 'last_ms')
local tick = tonumber(redis.call('HGET', KEYS[5], 'tick') or '0')
if not last then
  -- The first call starts the first interval: visitors gather for one tick.
  redis.call('HSET', KEYS[5], 'last_ms', now)
  return {0, tick, now, tick_ms, 0, redis.call('ZCARD', KEYS[1]), count_active()}
end
last = tonumber(last)
if now - last < tick_ms then
  return {0, tick, now, tick_ms - (now - last), 0, redis.call('ZCARD', KEYS[1]), count_active()}
end
tick = redis.call('HINCRBY', KEYS[5], 'tick', 1)
redis.call('HSET', KEYS[5], 'last_ms', now)

-- Expired sessions: bounded per call; ZCOUNT above never counts them anyway.
local expired = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, 20000)
for i = 1, #expired, CHUNK do
  local part = {unpack(expired, i, math.min(i + CHUNK - 1, #expired))}
  redis.call('ZREM', KEYS[3], unpack(part))
  redis.call('HDEL', KEYS[4], unpack(part))
end

-- Abandoned visitors leave the line before anyone is released, so they never
-- take one of the N slots.
local abandoned = 0
local abandon = tonumber(ARGV[5])
if abandon > 0 then
  local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. (now - abandon), 'LIMIT', 0, 50000)
  for i = 1, #gone, CHUNK do
    local part = {unpack(gone, i, math.min(i + CHUNK - 1, #gone))}
    redis.call('ZREM', KEYS[1], unpack(part))
    redis.call('ZREM', KEYS[2], unpack(part))
  end
  abandoned = #gone
  if abandoned > 0 then
    redis.call('HINCRBY', KEYS[5], 'abandoned', abandoned)
  end
end

local released = {}
if ARGV[6] ~= '1' then
  local n = tonumber(ARGV[1])
  local cap = tonumber(ARGV[4])
  if cap > 0 then
    n = math.min(n, math.max(cap - count_active(), 0))
  end
  if n > 0 then
    local popped = redis.call('ZPOPMIN', KEYS[1], n)
    local expires = now + tonumber(ARGV[3])
    for i = 1, #popped, 2 do
      released[#released + 1] = popped[i]
    end
    for i = 1, #released, CHUNK do
      local zargs, hargs = {}, {}
      for j = i, math.min(i + CHUNK - 1, #released) do
        zargs[#zargs + 1] = expires
        zargs[#zargs + 1] = released[j]
        hargs[#hargs + 1] = released[j]
        hargs[#hargs + 1] = now
      end
      redis.call('ZADD', KEYS[3], unpack(zargs))
      redis.call('HSET', KEYS[4], unpack(hargs))
      redis.call('ZREM', KEYS[2], unpack(released, i, math.min(i + CHUNK - 1, #released)))
    end
    redis.call('HINCRBY', KEYS[5], 'released', #released)
  end
end

local waiting = redis.call('ZCARD', KEYS[1])
local active = count_active()
if ARGV[7] ~= '' then
  redis.call('PUBLISH', ARGV[7], tick .. ' ' .. now .. ' ' .. #released .. ' ' .. abandoned .. ' ' .. waiting)
end
local out = {1, tick, now, tick_ms, abandoned, waiting, active}
for i = 1, #released do
  out[#out + 1] = released[i]
end
return out
