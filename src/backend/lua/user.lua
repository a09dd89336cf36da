#!lua
-- A user's index of sessions: KEYS[1] a sorted set of public ids, KEYS[2] a hash from public
-- id to session key, and the cut ('\0cut': logins whose request started before it are
-- refused). Both keys carry the user's hash tag, so this script runs on one node of a
-- cluster. An entry whose key starts with '!' is being ended ("end all", or one by id): it
-- is listed no more, cannot move, and is removed once its session is ended.
--
-- A score is the session's expiry as last written or checked (ms): the session lives at
-- least until then, unless it is ended. Entries past their score are "stale": the session
-- may have expired, or been used since. The caller checks stale entries in bounded steps
-- and settles them (drop the gone ones, move the live ones' scores), so the index holds
-- only sessions that can still be alive, without ever dropping one on its score alone.
-- The keys expire at UNTIL (now + the absolute timeout: no session indexed so far can
-- live longer), or 10 minutes after the cut, whichever is later; every change moves that on.
--
-- Replies are {status, m, id, key, score, ...}: m entries to end, then stale entries.
-- ARGV[1] is the action:
--   add ID KEY OLD SCORE NOW STARTED UNTIL N MAX POLICY: index a login. Status 0 (refused)
--     when the login's request started before the cut, or when ID is indexed under another
--     key than OLD (a stale cookie, or a session being ended). With MAX > 0, other entries
--     not being ended are at most MAX - 1 afterwards: POLICY 'refuse' refuses (status 2),
--     'oldest' marks the oldest (lowest id: ids are UUID v7) to end, and returns every
--     entry being ended. Returns up to N stale entries beside.
--   move ID OLD NEW SCORE NOW UNTIL: the session got a new key; only if ID is indexed under
--     OLD. Status 1 or 0.
--   remove ID KEY ...: drop these entries, each only if it still holds KEY (or '!' KEY).
--   mark ID ...: mark these entries as being ended; returns them to end.
--   take KEEP NOW UNTIL: raise the cut to NOW, mark every entry but KEEP; returns them to end.
--   stale NOW N: up to N stale entries.
--   settle NOW UNTIL ID KEY SCORE ...: the caller checked these: SCORE 0 drops the entry (its
--     session is gone or ended), else moves its score; each only if it still holds KEY.
local cut_field = '\0cut'

local function expire(until_ms, now)
  local at = tonumber(until_ms)
  local cut = redis.call('HGET', KEYS[2], cut_field)
  if cut then at = math.max(at, tonumber(cut) + 600000) end
  for i = 1, 2 do
    local pttl = redis.call('PTTL', KEYS[i])
    if pttl == -2 then
    elseif pttl == -1 or at > tonumber(now) + pttl then
      redis.call('PEXPIREAT', KEYS[i], string.format('%d', at))
    end
  end
end

-- The entry's key without the mark, and whether it holds `key`.
local function holds(id, key)
  local current = redis.call('HGET', KEYS[2], id)
  return current and (current == key or current == '!' .. key)
end

local function mark(id)
  local key = redis.call('HGET', KEYS[2], id)
  if not key then return nil end
  if string.sub(key, 1, 1) ~= '!' then
    redis.call('HSET', KEYS[2], id, '!' .. key)
    return key
  end
  return string.sub(key, 2)
end

local function push(out, id, key)
  out[#out + 1] = id
  out[#out + 1] = key
  out[#out + 1] = redis.call('ZSCORE', KEYS[1], id) or '0'
end

-- Stale entries handed out for checking are leased for 5 s (their score moves on), so that
-- callers checking at once take different ones; one that is not settled comes back after.
local function stale(out, now, n)
  if n <= 0 then return end
  local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. now, 'LIMIT', 0, n)
  for _, id in ipairs(ids) do
    local key = redis.call('HGET', KEYS[2], id)
    if key then
      if string.sub(key, 1, 1) == '!' then key = string.sub(key, 2) end
      push(out, id, key)
      redis.call('ZADD', KEYS[1], string.format('%d', tonumber(now) + 5000), id)
    else
      redis.call('ZREM', KEYS[1], id)
    end
  end
end

local action = ARGV[1]
if action == 'add' then
  local id, key, old = ARGV[2], ARGV[3], ARGV[4]
  local cut = redis.call('HGET', KEYS[2], cut_field)
  if cut and tonumber(ARGV[7]) < tonumber(cut) then return {0, 0} end
  local current = redis.call('HGET', KEYS[2], id)
  -- (Its own entry, when repeated after a lost reply.)
  if current and current ~= key and current ~= old then return {0, 0} end
  local out = {1, 0}
  local max = tonumber(ARGV[10])
  if max > 0 then
    -- Entries already being ended are returned again: the reply that first named them to
    -- its caller may have been lost.
    local others = {}
    local all = redis.call('HGETALL', KEYS[2])
    for i = 1, #all, 2 do
      local other, at = all[i], all[i + 1]
      if other == cut_field or other == id then
      elseif string.sub(at, 1, 1) == '!' then push(out, other, string.sub(at, 2))
      else others[#others + 1] = other end
    end
    local over = #others - (max - 1)
    if over > 0 and ARGV[11] ~= 'oldest' then return {2, 0} end
    table.sort(others)
    for i = 1, over do push(out, others[i], mark(others[i])) end
    out[2] = (#out - 2) / 3
  end
  redis.call('ZADD', KEYS[1], ARGV[5], id)
  redis.call('HSET', KEYS[2], id, key)
  stale(out, ARGV[6], tonumber(ARGV[9]))
  expire(ARGV[8], ARGV[6])
  return out
elseif action == 'move' then
  local current = redis.call('HGET', KEYS[2], ARGV[2])
  if current ~= ARGV[4] then
    if current ~= ARGV[3] then return {0, 0} end
    redis.call('HSET', KEYS[2], ARGV[2], ARGV[4])
  end
  redis.call('ZADD', KEYS[1], 'XX', ARGV[5], ARGV[2])
  expire(ARGV[7], ARGV[6])
  return {1, 0}
elseif action == 'remove' then
  for i = 2, #ARGV - 1, 2 do
    if holds(ARGV[i], ARGV[i + 1]) then
      redis.call('ZREM', KEYS[1], ARGV[i])
      redis.call('HDEL', KEYS[2], ARGV[i])
    end
  end
  return {1, 0}
elseif action == 'mark' then
  local out = {1, 0}
  for i = 2, #ARGV do
    local key = mark(ARGV[i])
    if key then push(out, ARGV[i], key) end
  end
  out[2] = (#out - 2) / 3
  return out
elseif action == 'take' then
  local cut = tonumber(redis.call('HGET', KEYS[2], cut_field) or 0)
  redis.call('HSET', KEYS[2], cut_field, string.format('%d', math.max(cut, tonumber(ARGV[3]))))
  local ids = redis.call('HKEYS', KEYS[2])
  local out = {1, 0}
  for _, id in ipairs(ids) do
    if id ~= ARGV[2] and id ~= cut_field then push(out, id, mark(id)) end
  end
  out[2] = (#out - 2) / 3
  expire(ARGV[4], ARGV[3])
  return out
elseif action == 'stale' then
  local out = {1, 0}
  stale(out, ARGV[2], tonumber(ARGV[3]))
  return out
elseif action == 'settle' then
  for i = 4, #ARGV - 2, 3 do
    local id, key, score = ARGV[i], ARGV[i + 1], ARGV[i + 2]
    if holds(id, key) then
      if score == '0' then
        redis.call('ZREM', KEYS[1], id)
        redis.call('HDEL', KEYS[2], id)
      else
        redis.call('ZADD', KEYS[1], score, id)
      end
    end
  end
  expire(ARGV[3], ARGV[2])
  return {1, 0}
end
return redis.error_reply('unknown action ' .. tostring(action))
