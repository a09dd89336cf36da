#!lua
-- First half of id regeneration: read the session and delete it in one step, so that from
-- here on no request with the old token can read or write it.
-- Returns the hash as {field, value, ...} (with the '' creation field), or nil when gone.
local all = redis.call('HGETALL', KEYS[1])
if #all == 0 then return false end
redis.call('DEL', KEYS[1])
return all
