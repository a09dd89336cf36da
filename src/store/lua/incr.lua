#!lua
-- Atomic counter: HINCRBY with the same guard and expiry as save.lua.
-- ARGV[1]: TTL in ms. ARGV[2], ARGV[3]: mode and creation time as in save.lua. ARGV[4]: field.
-- ARGV[5]: increment. ARGV[6] (optional): a value the request set for the field, written first.
-- Returns {1, new value}, {0} when the session is gone, {-1} when a new key is taken.
if ARGV[2] == 'n' then
  if redis.call('HSETNX', KEYS[1], '', ARGV[3]) == 0 then return {-1} end
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
elseif redis.call('PEXPIRE', KEYS[1], ARGV[1]) == 0 then
  return {0}
end
if ARGV[6] then redis.call('HSET', KEYS[1], ARGV[4], ARGV[6]) end
return {1, redis.call('HINCRBY', KEYS[1], ARGV[4], ARGV[5])}
