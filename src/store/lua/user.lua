#!lua
-- A user's index of sessions: KEYS[1] a sorted set of public ids by absolute deadline (ms),
-- KEYS[2] a hash from public id to session key, and the cut ('\0cut': logins whose request
-- started before it are refused). Both keys carry the user's hash tag, so this script runs
-- on one node of a cluster, and both expire together, with the last session or 10 minutes
-- after the cut. An entry whose key starts with '!' is being ended ("end all", or one by
-- id): it is listed no more, cannot move, and is removed once its session is ended.
-- ARGV[1] is the action:
--   add ID KEY OLD DEADLINE NOW STARTED: index a login. Refused (0) when the login's request
--     started before the cut, or when ID is indexed under another key than OLD (a stale
--     cookie, or a session being ended). Drops entries past their deadline. Returns 1.
--   move ID OLD NEW: the session got a new key; only if ID is indexed under OLD. Returns 1
--     or 0.
--   remove ID KEY ...: drop these entries, each only if it still holds KEY (or '!' KEY).
--   mark ID ...: mark these entries as being ended. Returns their keys.
--   take KEEP NOW: raise the cut to NOW, mark every entry but KEEP. Returns their keys.
local cut_field = '\0cut'

local function expire(extra)
  local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
  local at = tonumber(last[2] or 0)
  local cut = redis.call('HGET', KEYS[2], cut_field)
  if cut then at = math.max(at, tonumber(cut) + 600000) end
  if extra then at = math.max(at, extra) end
  if at > 0 then
    redis.call('PEXPIREAT', KEYS[1], string.format('%d', at))
    redis.call('PEXPIREAT', KEYS[2], string.format('%d', at))
  end
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

local action = ARGV[1]
if action == 'add' then
  local cut = redis.call('HGET', KEYS[2], cut_field)
  if cut and tonumber(ARGV[7]) < tonumber(cut) then return 0 end
  local current = redis.call('HGET', KEYS[2], ARGV[2])
  -- (Its own entry, when repeated after a lost reply.)
  if current and current ~= ARGV[4] and current ~= ARGV[3] then return 0 end
  local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[6])
  for i = 1, #expired, 1000 do
    redis.call('HDEL', KEYS[2], unpack(expired, i, math.min(#expired, i + 999)))
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[6])
  redis.call('ZADD', KEYS[1], ARGV[5], ARGV[2])
  redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
  expire(tonumber(ARGV[5]))
  return 1
elseif action == 'move' then
  local current = redis.call('HGET', KEYS[2], ARGV[2])
  if current == ARGV[4] then return 1 end
  if current ~= ARGV[3] then return 0 end
  redis.call('HSET', KEYS[2], ARGV[2], ARGV[4])
  return 1
elseif action == 'remove' then
  for i = 2, #ARGV - 1, 2 do
    local current = redis.call('HGET', KEYS[2], ARGV[i])
    if current == ARGV[i + 1] or current == '!' .. ARGV[i + 1] then
      redis.call('ZREM', KEYS[1], ARGV[i])
      redis.call('HDEL', KEYS[2], ARGV[i])
    end
  end
  return {}
elseif action == 'mark' then
  local keys = {}
  for i = 2, #ARGV do
    local key = mark(ARGV[i])
    if key then keys[#keys + 1] = ARGV[i]; keys[#keys + 1] = key end
  end
  return keys
elseif action == 'take' then
  local cut = tonumber(redis.call('HGET', KEYS[2], cut_field) or 0)
  redis.call('HSET', KEYS[2], cut_field, string.format('%d', math.max(cut, tonumber(ARGV[3]))))
  local ids = redis.call('HKEYS', KEYS[2])
  local keys = {}
  for _, id in ipairs(ids) do
    if id ~= ARGV[2] and id ~= cut_field then
      keys[#keys + 1] = id
      keys[#keys + 1] = mark(id)
    end
  end
  expire(nil)
  return keys
end
return redis.error_reply('unknown action ' .. tostring(action))
