#!lua
-- Ends a session (logout, or the first half of a new id) in one step: the hash is replaced
-- by a marker, {'' = 'ended'}, that lives for ARGV[1] ms, as long as the old cookie could
-- still be valid. A request that still carries the old cookie then neither reads the
-- session nor starts a new one whose cookie would overwrite the newer one in the browser.
-- ARGV[2]: '1' to return every field the key held, '0' for its '' field and its user only.
-- ARGV[3]: '0' to leave an absent key alone (a session that is gone needs no marker), '1' to
-- write the marker anyway (a session that may be created at the key yet, or a cookie).
-- Returns {field, value, ...}: empty when there was nothing, {'', 'ended'} for a marker.
local all
if ARGV[2] == '1' then
  all = redis.call('HGETALL', KEYS[1])
else
  local meta = redis.call('HMGET', KEYS[1], '', '\0user')
  all = meta[1] and {'', meta[1]} or {}
  if meta[1] and meta[2] then
    all[3] = '\0user'
    all[4] = meta[2]
  end
end
if ARGV[3] == '0' and #all == 0 and redis.call('EXISTS', KEYS[1]) == 0 then return all end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], '', 'ended')
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return all
