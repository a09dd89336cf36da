-- Atomic counter: HINCRBY with the same guard and expiry refresh as save.lua.
-- ARGV[3]: 'u' or 'n' as in save.lua (ARGV[4] unused); ARGV[5]: field; ARGV[6]: increment;
-- ARGV[7] (optional): a value the request set for the field, written first.
-- Returns {ttl_ms, new value}, {0} when the session is gone, {-1} when a new key is taken.
local ttl
if ARGV[3] == 'n' then
  if redis.call('EXISTS', KEYS[1]) == 1 then return {-1} end
  local created = now_ms()
  ttl = ttl_for(created)
  redis.call('HSET', KEYS[1], '', created)
else
  ttl = live_ttl()
  if not ttl then return {0} end
end
if ARGV[7] then redis.call('HSET', KEYS[1], ARGV[5], ARGV[7]) end
local value = redis.call('HINCRBY', KEYS[1], ARGV[5], ARGV[6])
redis.call('PEXPIRE', KEYS[1], ttl)
return {ttl, value}
