-- Where a visitor stands; with mode "join", join if not there yet.
-- KEYS: 1 line (zset visitor->seq), 2 seen (zset visitor->ms), 3 sessions (zset visitor->expires ms),
--       4 admitted (hash visitor->admitted ms), 5 seq (counter),
--       6 places (zset, all scores 0: "<client>:<visitor>" per waiting place of a counted client),
--       7 place_of (hash visitor->client), 8 proof (string: this join's challenge seed, once spent),
--       9 epoch (string), 10 honoured (set "<visitor>:<epoch>" of tickets already honoured),
--       11 entrants (set: the lottery's entrants, see draw.lua)
-- ARGV: 1 visitor, 2 mode ("join" | "status"), 3 free_entry, 4 max_active, 5 session_ms,
--       6 abandon_after_ms, 7 queue_all ("1" | "0"), 8 client ("" = not counted),
--       9 max places per client (0 = none), 10 proof ("" = not required | "missing" | "solved"),
--       11 how long to remember a spent proof (ms), 12 an epoch id for a line that has none,
--       13 the epoch of the visitor's verified queue ticket ("" = none), 14 that ticket's sequence
--       number, 15 joins before this store time (ms) are lottery entrants (0 = the queue has no
--       lottery), 16 "passthrough": admit at once whoever waits (below max_active)
-- KEYS 6-11 and ARGV 8-16 may be left out (no cap, no proof, no epoch, no lottery, fifo).
-- A visitor's session and place are always looked up, also for an id minted for this join:
-- a join whose answer timed out is sent again, and the second call must find the first's place.
-- Returns {kind, a, b, join_kind, epoch, seq}: kind "READY" (a = admitted ms, b = expires ms),
--   "WAITING" (a = position, b = waiting), "NOT_IN_QUEUE"; join_kind: existing | joined | free | rejoined |
--   restored, or a refusal: client_full | challenge | spent; epoch: the line's ("" without KEYS[9]);
--   seq: the visitor's sequence number in line (WAITING; else "")
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- The line's epoch: a random id written with the line, so a Redis that lost
-- the line shows a new one (see release.lua, which does the same). A new
-- epoch's sequence starts at the store's clock in microseconds: above every
-- sequence an earlier epoch handed out (no line takes a million joins a
-- second), so restored places sort ahead of the new epoch's arrivals.
local epoch = ''
if KEYS[9] then
  epoch = redis.call('GET', KEYS[9])
  if not epoch then
    epoch = ARGV[12]
    redis.call('SET', KEYS[9], epoch)
    redis.call('SET', KEYS[5], t[1] .. string.format('%06d', tonumber(t[2])), 'NX')
  end
end
local v = ARGV[1]
local client = ARGV[8] or ''
local max_places = tonumber(ARGV[9] or '0')
local proof = ARGV[10] or ''

-- A waiting visitor left the line: forget which client held the place.
local function forget_place()
  if KEYS[7] then
    local c = redis.call('HGET', KEYS[7], v)
    if c then
      redis.call('ZREM', KEYS[6], c .. ':' .. v)
      redis.call('HDEL', KEYS[7], v)
    end
  end
end

-- Spend the proof of a join that adds a place or admits: a refusal, or nil.
local function spend()
  if proof == 'missing' then
    return 'challenge'
  end
  if proof == 'solved' then
    if not redis.call('SET', KEYS[8], '1', 'NX', 'PX', math.max(tonumber(ARGV[11]), 1)) then
      return 'spent'
    end
  end
  return nil
end

local function decide()
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
      forget_place()
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
  local passthrough = ARGV[16] == 'passthrough'
  if (waiting == 0 and ARGV[7] ~= '1') or passthrough then
    local active = redis.call('ZCOUNT', KEYS[3], '(' .. now, '+inf')
    local free = tonumber(ARGV[3])
    local cap = tonumber(ARGV[4])
    if (active < free or passthrough) and (cap == 0 or active < cap) then
      local refused = spend()
      if refused then
        return {'NOT_IN_QUEUE', 0, 0, refused}
      end
      local expires = now + tonumber(ARGV[5])
      redis.call('ZADD', KEYS[3], expires, v)
      redis.call('HSET', KEYS[4], v, now)
      return {'READY', now, expires, 'free'}
    end
  end

  -- A verified ticket of an earlier epoch: this line was lost (Redis restarted
  -- empty or failed over to a replica that missed writes) while the visitor
  -- waited. Their place comes back at their old sequence number, ahead of every
  -- fresh arrival of this epoch; once per visitor and lost epoch, so a replayed
  -- ticket (after admission, or a second time) joins at the back like anyone.
  local ticket_epoch = ARGV[13] or ''
  if KEYS[10] and ticket_epoch ~= '' and ticket_epoch ~= epoch
      and redis.call('SADD', KEYS[10], v .. ':' .. ticket_epoch) == 1 then
    redis.call('PEXPIRE', KEYS[10], 86400000)
    redis.call('ZADD', KEYS[1], ARGV[14], v)
    redis.call('ZADD', KEYS[2], now, v)
    if client ~= '' and max_places > 0 then
      redis.call('ZADD', KEYS[6], 0, client .. ':' .. v)
      redis.call('HSET', KEYS[7], v, client)
    end
    return {'WAITING', redis.call('ZRANK', KEYS[1], v) + 1, redis.call('ZCARD', KEYS[1]), 'restored'}
  end

  local counted = client ~= '' and max_places > 0
  if counted then
    -- Members "<client>:<visitor>" sort together; ';' follows ':'.
    local from, to = '[' .. client .. ':', '(' .. client .. ';'
    if redis.call('ZLEXCOUNT', KEYS[6], from, to) >= max_places then
      -- At the cap: drop places that left the line by a path that did not
      -- forget them, so a drifted count heals instead of locking the client out.
      local held = 0
      for _, m in ipairs(redis.call('ZRANGEBYLEX', KEYS[6], from, to)) do
        local other = string.sub(m, #client + 2)
        if redis.call('ZSCORE', KEYS[1], other) then
          held = held + 1
        else
          redis.call('ZREM', KEYS[6], m)
          if redis.call('HGET', KEYS[7], other) == client then
            redis.call('HDEL', KEYS[7], other)
          end
        end
      end
      if held >= max_places then
        return {'NOT_IN_QUEUE', 0, 0, 'client_full'}
      end
    end
  end

  local refused = spend()
  if refused then
    return {'NOT_IN_QUEUE', 0, 0, refused}
  end

  local seq = redis.call('INCR', KEYS[5])
  redis.call('ZADD', KEYS[1], seq, v)
  redis.call('ZADD', KEYS[2], now, v)
  if KEYS[11] and now < tonumber(ARGV[15] or '0') then
    redis.call('SADD', KEYS[11], v)
  end
  if counted then
    redis.call('ZADD', KEYS[6], 0, client .. ':' .. v)
    redis.call('HSET', KEYS[7], v, client)
  end
  waiting = waiting + 1
  if lost then
    return {'WAITING', waiting, waiting, 'rejoined'}
  end
  return {'WAITING', waiting, waiting, 'joined'}
end

local out = decide()
out[5] = epoch
out[6] = out[1] == 'WAITING' and (redis.call('ZSCORE', KEYS[1], v) or '') or ''
return out
