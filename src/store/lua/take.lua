-- First half of id regeneration: read the session and delete it in one step, so that from
-- here on no request with the old token can write to it.
-- Returns {ttl_ms, {field, value, ...}} (with the '' creation field) or nil when gone.
local ttl = live_ttl()
if not ttl then return false end
local all = redis.call('HGETALL', KEYS[1])
redis.call('DEL', KEYS[1])
return {ttl, all}
