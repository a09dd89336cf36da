#!lua
-- A user's index of sessions: KEYS[1] a sorted set of public ids by absolute deadline (ms),
-- KEYS[2] a hash from public id to session key. Both carry the user's hash tag, so this
-- script runs on one node of a cluster. ARGV[1] is the action:
--   add ID KEY DEADLINE NOW STARTED: index a session (login); drop entries past their
--     deadline; the index lives as long as its last session can. Returns 1, or 0 (nothing
--     indexed) when the login's request started before the user's sessions were last ended.
--   move ID KEY: the session got a new key (new id of the same session), if still indexed.
--     Returns 1, or 0 when it is not (its user's sessions were ended meanwhile).
--   remove ID...: forget these sessions. Returns their keys.
--   take KEEP NOW: forget every session but KEEP ('' for none), and refuse logins whose
--     request started before NOW (the cut, kept 10 minutes at least). Returns their keys.
-- The cut lives in KEYS[2] under the field '\0cut' (public ids are never empty nor NUL).
local action = ARGV[1]
if action == 'add' then
  local cut = redis.call('HGET', KEYS[2], '\0cut')
  if cut and tonumber(ARGV[6]) < tonumber(cut) then return 0 end
  redis.call('ZADD', KEYS[1], ARGV[4], ARGV[2])
  redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
  local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[5])
  for i = 1, #expired, 1000 do
    redis.call('HDEL', KEYS[2], unpack(expired, i, math.min(#expired, i + 999)))
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[5])
  local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
  redis.call('PEXPIREAT', KEYS[1], last[2])
  redis.call('PEXPIREAT', KEYS[2], last[2], 'GT')
  if redis.call('PTTL', KEYS[2]) < 0 then redis.call('PEXPIREAT', KEYS[2], last[2]) end
  return 1
elseif action == 'move' then
  if not redis.call('ZSCORE', KEYS[1], ARGV[2]) then return 0 end
  redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
  return 1
elseif action == 'remove' then
  local keys = {}
  for i = 2, #ARGV, 1000 do
    local last = math.min(#ARGV, i + 999)
    for _, key in ipairs(redis.call('HMGET', KEYS[2], unpack(ARGV, i, last))) do
      if key then keys[#keys + 1] = key end
    end
    redis.call('ZREM', KEYS[1], unpack(ARGV, i, last))
    redis.call('HDEL', KEYS[2], unpack(ARGV, i, last))
  end
  return keys
elseif action == 'take' then
  local all = redis.call('HGETALL', KEYS[2])
  local score = ARGV[2] ~= '' and redis.call('ZSCORE', KEYS[1], ARGV[2])
  local keys, kept = {}, nil
  for i = 1, #all, 2 do
    if all[i] == ARGV[2] then
      kept = all[i + 1]
    elseif string.byte(all[i], 1) ~= 0 then
      keys[#keys + 1] = all[i + 1]
    end
  end
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('HSET', KEYS[2], '\0cut', ARGV[3])
  local until_ms = tonumber(ARGV[3]) + 600000
  if score and kept then
    redis.call('ZADD', KEYS[1], score, ARGV[2])
    redis.call('HSET', KEYS[2], ARGV[2], kept)
    redis.call('PEXPIREAT', KEYS[1], score)
    until_ms = math.max(until_ms, tonumber(score))
  end
  redis.call('PEXPIREAT', KEYS[2], until_ms)
  return keys
end
return redis.error_reply('unknown action ' .. tostring(action))
