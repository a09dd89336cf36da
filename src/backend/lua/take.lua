#!lua
-- Reads a field and removes it in one step (a one-time value: a flash message, a nonce, a
-- second factor's state), with the guard and the expiry of save.lua: two requests never both
-- take it. KEYS[1]: the session hash. ARGV[1]: TTL in ms. ARGV[2]: the field.
-- Returns {1, value} ({1} when the field is not there), 0 when there is no session, -2 when
-- it was ended (see end.lua).
local created = redis.call('HGET', KEYS[1], '')
if not created then return 0 end
if created == 'ended' then return -2 end
local value = redis.call('HGET', KEYS[1], ARGV[2])
if value then redis.call('HDEL', KEYS[1], ARGV[2]) end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
if value then return {1, value} end
return {1}
