#!lua
-- Atomic counter: HINCRBY with the same guard and expiry as save.lua.
-- ARGV[1]: TTL in ms. ARGV[2], ARGV[3]: mode and creation time as in save.lua. ARGV[4]: field.
-- ARGV[5]: increment. ARGV[6]: the most keys the session may hold, checked here when the
-- request never loaded it ('0': checked already). ARGV[7]: a new session's public id.
-- ARGV[8] (optional): a value the request set for the field, written first.
-- Returns {1, new value as text}, {0} when there is no session, {-1} when a new key is taken, {-2}
-- when the session was ended, {-3, keys} over the key limit, {-5} when the field holds no
-- integer or the sum would overflow.
if ARGV[2] == 'n' then
  if redis.call('HSETNX', KEYS[1], '', ARGV[3]) == 0 then return {-1} end
  redis.call('HSET', KEYS[1], '\0id', ARGV[7])
else
  local created = redis.call('HGET', KEYS[1], '')
  if not created then return {0} end
  if created == 'ended' then return {-2} end
  if ARGV[6] ~= '0' and redis.call('HEXISTS', KEYS[1], ARGV[4]) == 0 then
    -- The session's keys, with the new one: every field but '' and the metadata ('\0...').
    local keys = redis.call('HLEN', KEYS[1])
    for _, v in ipairs(redis.call('HMGET', KEYS[1], '\0id', '\0user', '\0idle')) do
      if v then keys = keys - 1 end
    end
    if keys > tonumber(ARGV[6]) then return {-3, keys} end
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
if ARGV[8] then redis.call('HSET', KEYS[1], ARGV[4], ARGV[8]) end
-- Not an integer, or the sum overflows: a status of its own, not an error text to match.
-- The new value is read back as text: HINCRBY's integer reply becomes a Lua number (a
-- double) and would lose every digit past 2^53.
local ok = pcall(redis.call, 'HINCRBY', KEYS[1], ARGV[4], ARGV[5])
if not ok then return {-5} end
return {1, redis.call('HGET', KEYS[1], ARGV[4])}
