-- Load a session and slide its expiry, in one round trip.
-- Returns {ttl_ms, {field, value, ...}} or nil when the session is gone.
local ttl = live_ttl()
if not ttl then return false end
redis.call('PEXPIRE', KEYS[1], ttl)
return {ttl, redis.call('HGETALL', KEYS[1])}
