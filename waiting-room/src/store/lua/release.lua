-- Release the next batch of a queue if a tick is due. Every instance calls this;
-- the tick marker read and written here, with Redis TIME, makes releases of all
-- instances at least tick_ms apart, so any window of tick_ms holds at most N.
-- KEYS: 1 line, 2 seen, 3 sessions, 4 admitted, 5 tick (hash: last_ms, tick, released, abandoned,
--       seq, joined), 6 places, 7 place_of (see standing.lua), 8 seq (the join sequence), 9 epoch,
--       10 signals (hash: the window's merged reports, see report.lua), 11 inflight (hash:
--       instance -> "<in flight> <ms>"), 12 pending (zset: released visitor -> admission ms, until
--       they arrive), 13 noshow (zset: no-show -> session end ms), 14 controller (hash: n, tick,
--       reason, epoch, record), 15 ticklog (list: "<tick> <ms> <n> <released> <waiting> <mode> <reason>")
-- ARGV: 1 n, 2 tick_ms, 3 session_ms, 4 max_active, 5 abandon_after_ms, 6 paused ("1"|"0"),
--       7 pub/sub channel ("" = don't publish), 8 an epoch id for a line that has none,
--       9 mode ("fixed"|"adaptive"), 10 min_per_tick, 11 max_per_tick, 12 pin (0 = none),
--       13 arrival_grace_ms (0 = arrivals not tracked), 14 queue mode ("fifo" | "random": N drawn
--       uniformly from the line | "passthrough": everyone waiting, at most 10,000 a call),
--       15 release cap (what is left to sell; 0 = none)
-- Returns {ticked, tick, now, next_due_ms, abandoned, waiting, active, joined, epoch, n, no_shows,
--          window, record, released visitors...}
-- where joined = places added during the last completed tick interval (the join sequence's delta),
-- n = the N this tick was allowed (0 without a tick), window = {samples, errors, in_flight,
-- arrived, no_shows, bucket, count, bucket, count, ...} of the interval this tick closed (only to
-- the caller whose call ticked, so the controller decides once per tick; {} otherwise), and
-- record = the controller's last saved decision (JSON, "" if none).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local tick_ms = tonumber(ARGV[2])
local CHUNK = 1000

-- The line's epoch (see standing.lua): a line that has none was lost or is
-- new; its tick count starts again from 1, and instances that see the new
-- epoch stop comparing ticks with the old one.
local epoch = redis.call('GET', KEYS[9])
if not epoch then
  epoch = ARGV[8]
  redis.call('SET', KEYS[9], epoch)
  redis.call('SET', KEYS[8], t[1] .. string.format('%06d', tonumber(t[2])), 'NX')
end

local function count_active()
  return redis.call('ZCOUNT', KEYS[3], '(' .. now, '+inf')
end
local record = redis.call('HGET', KEYS[14], 'record') or ''
local grace = tonumber(ARGV[13])
local adaptive = ARGV[9] == 'adaptive'

-- Visitors who left the line (released or abandoned): forget which client held their places.
local function forget_places(visitors)
  if #visitors == 0 or redis.call('EXISTS', KEYS[7]) == 0 then
    return
  end
  local clients = redis.call('HMGET', KEYS[7], unpack(visitors))
  local members = {}
  for i = 1, #visitors do
    if clients[i] then
      members[#members + 1] = clients[i] .. ':' .. visitors[i]
    end
  end
  if #members > 0 then
    redis.call('ZREM', KEYS[6], unpack(members))
    redis.call('HDEL', KEYS[7], unpack(visitors))
  end
end

local seq = tonumber(redis.call('GET', KEYS[8]) or '0')
local last = redis.call('HGET', KEYS[5], 'last_ms')
local tick = tonumber(redis.call('HGET', KEYS[5], 'tick') or '0')
if not last then
  -- The first call starts the first interval: visitors gather for one tick.
  redis.call('HSET', KEYS[5], 'last_ms', now, 'seq', seq)
  return {0, tick, now, tick_ms, 0, redis.call('ZCARD', KEYS[1]), count_active(), 0, epoch, 0, 0, {}, record}
end
last = tonumber(last)
if now - last < tick_ms then
  local joined = tonumber(redis.call('HGET', KEYS[5], 'joined') or '0')
  return {0, tick, now, tick_ms - (now - last), 0, redis.call('ZCARD', KEYS[1]), count_active(), joined, epoch,
          0, 0, {}, record}
end
tick = redis.call('HINCRBY', KEYS[5], 'tick', 1)
-- A marker written before this field existed counts from here.
local joined = math.max(seq - tonumber(redis.call('HGET', KEYS[5], 'seq') or seq), 0)
redis.call('HSET', KEYS[5], 'last_ms', now, 'seq', seq, 'joined', joined)

-- Expired sessions: bounded per call; ZCOUNT above never counts them anyway.
local expired = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, 20000)
for i = 1, #expired, CHUNK do
  local part = {unpack(expired, i, math.min(i + CHUNK - 1, #expired))}
  redis.call('ZREM', KEYS[3], unpack(part))
  redis.call('HDEL', KEYS[4], unpack(part))
  redis.call('ZREM', KEYS[12], unpack(part))
end
redis.call('ZREMRANGEBYSCORE', KEYS[13], '-inf', now)

-- Released visitors who made no request within the grace are no-shows: in
-- adaptive mode they stop counting toward max_active (their tokens stay
-- valid; one who turns up late counts again, see report.lua).
local no_shows = 0
if grace > 0 then
  local late = redis.call('ZRANGEBYSCORE', KEYS[12], '-inf', '(' .. (now - grace), 'WITHSCORES', 'LIMIT', 0, 20000)
  for i = 1, #late, 2 * CHUNK do
    local members, zargs = {}, {}
    for j = i, math.min(i + 2 * CHUNK - 1, #late), 2 do
      members[#members + 1] = late[j]
      zargs[#zargs + 1] = tonumber(late[j + 1]) + tonumber(ARGV[3])
      zargs[#zargs + 1] = late[j]
    end
    redis.call('ZREM', KEYS[12], unpack(members))
    redis.call('ZADD', KEYS[13], unpack(zargs))
  end
  no_shows = #late / 2
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
    forget_places(part)
  end
  abandoned = #gone
  if abandoned > 0 then
    redis.call('HINCRBY', KEYS[5], 'abandoned', abandoned)
  end
end

-- The N of this tick: the operator's in fixed mode; in adaptive mode the
-- pin, else the controller's last decision, within the bounds.
local n = tonumber(ARGV[1])
local mode, reason = 'fixed', 'fixed'
if adaptive then
  local lo = math.max(tonumber(ARGV[10]), 1)
  local hi = math.max(tonumber(ARGV[11]), lo)
  local pin = tonumber(ARGV[12])
  if pin > 0 then
    n, mode, reason = math.min(pin, hi), 'pinned', 'pinned'
  else
    local c = redis.call('HMGET', KEYS[14], 'n', 'reason')
    n = math.min(math.max(tonumber(c[1] or lo), lo), hi)
    mode, reason = 'adaptive', c[2] or 'start'
  end
end
local queue_mode = ARGV[14] or 'fifo'
if queue_mode == 'passthrough' then
  -- Everyone waiting (those who found max_active full), a bounded batch a call.
  n, mode, reason = math.min(redis.call('ZCARD', KEYS[1]), 10000), 'passthrough', 'passthrough'
end
local release_cap = tonumber(ARGV[15] or '0')
if release_cap > 0 then
  n = math.min(n, release_cap)
end
if ARGV[6] == '1' then
  n, mode = 0, 'paused'
end

local released = {}
if n > 0 then
  local cap = tonumber(ARGV[4])
  local room = n
  if cap > 0 then
    local active = count_active()
    if adaptive and grace > 0 then
      active = active - redis.call('ZCOUNT', KEYS[13], '(' .. now, '+inf')
    end
    room = math.min(n, math.max(cap - active, 0))
  end
  if room > 0 then
    local expires = now + tonumber(ARGV[3])
    if queue_mode == 'random' then
      -- Distinct members drawn uniformly (a positive count never repeats one).
      released = redis.call('ZRANDMEMBER', KEYS[1], room)
      for i = 1, #released, CHUNK do
        redis.call('ZREM', KEYS[1], unpack(released, i, math.min(i + CHUNK - 1, #released)))
      end
    else
      local popped = redis.call('ZPOPMIN', KEYS[1], room)
      for i = 1, #popped, 2 do
        released[#released + 1] = popped[i]
      end
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
      if grace > 0 then
        -- zargs as pending's: the admission time is every member's score.
        for j = 1, #zargs, 2 do
          zargs[j] = now
        end
        redis.call('ZADD', KEYS[12], unpack(zargs))
      end
      local part = {unpack(released, i, math.min(i + CHUNK - 1, #released))}
      redis.call('ZREM', KEYS[2], unpack(part))
      forget_places(part)
    end
    redis.call('HINCRBY', KEYS[5], 'released', #released)
  end
end

local waiting = redis.call('ZCARD', KEYS[1])
local active = count_active()

-- The window this tick closes: every instance's reports since the previous
-- tick, and the in-flight counts of instances heard from in the last 5 s.
local sig = redis.call('HGETALL', KEYS[10])
redis.call('DEL', KEYS[10])
local fields = {}
for i = 1, #sig, 2 do
  fields[sig[i]] = sig[i + 1]
end
local in_flight = 0
local flights = redis.call('HGETALL', KEYS[11])
for i = 1, #flights, 2 do
  local value, at = string.match(flights[i + 1], '^(%d+) (%d+)$')
  if at and tonumber(at) >= now - 5000 then
    in_flight = in_flight + tonumber(value)
  else
    redis.call('HDEL', KEYS[11], flights[i])
  end
end
local window = {tonumber(fields.samples or '0'), tonumber(fields.errors or '0'), in_flight,
                tonumber(fields.arrived or '0'), no_shows}
for name, count in pairs(fields) do
  local b = string.match(name, '^b(%d+)$')
  if b then
    window[#window + 1] = tonumber(b)
    window[#window + 1] = tonumber(count)
  end
end
redis.call('LPUSH', KEYS[15], table.concat({tick, now, n, #released, waiting, mode, reason}, ' '))
redis.call('LTRIM', KEYS[15], 0, 999)
if ARGV[7] ~= '' then
  -- Before the tick: an instance that hears of a new epoch resets its tick
  -- tracking, so it takes this tick for new.
  redis.call('PUBLISH', ARGV[7], 'epoch ' .. epoch .. ' ' .. tick)
  redis.call('PUBLISH', ARGV[7], tick .. ' ' .. now .. ' ' .. #released .. ' ' .. abandoned .. ' ' .. waiting)
  -- A message of its own: instances of the previous release parse the tick
  -- message by its exact field count and ignore this one.
  redis.call('PUBLISH', ARGV[7], 'pressure ' .. tick .. ' ' .. joined)
end
local out = {1, tick, now, tick_ms, abandoned, waiting, active, joined, epoch, n, no_shows, window, record}
for i = 1, #released do
  out[#out + 1] = released[i]
end
return out
