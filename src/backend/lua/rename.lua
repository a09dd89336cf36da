#!lua
-- A new secret for a live session without reading it: the hash moves to the new key whole
-- (RENAME, whatever its size), and the old key becomes the ended marker (see end.lua), in one
-- step. KEYS[1]: the old key, KEYS[2]: the new one (a fresh draw). ARGV[1]: the marker's TTL
-- in ms, ARGV[2]: the session's TTL in ms. Both keys must be on one server (not a cluster).
-- Returns {1, created, user} (user: '' when not bound), {0} when there is no session (the
-- marker is written all the same, as end.lua does), {-2} when it was ended, {-1} when the new
-- key is taken.
local function mark()
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], '', 'ended')
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
local meta = redis.call('HMGET', KEYS[1], '', '\0user')
if not meta[1] then mark() return {0} end
if meta[1] == 'ended' then mark() return {-2} end
if redis.call('EXISTS', KEYS[2]) == 1 then return {-1} end
redis.call('RENAME', KEYS[1], KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
mark()
return {1, meta[1], meta[2] or ''}
