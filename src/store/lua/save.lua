-- Write what a request changed, atomically with the expiry refresh.
-- ARGV[3]: 'u' update a live session, or 'n' create a new one (ARGV[4]: creation time in ms,
-- empty for now). ARGV[5]: '1' to drop every user field first. ARGV[6]: number of fields to
-- set, followed by field/value pairs, then the fields to delete.
-- Returns the new TTL in ms, 0 when the session is gone (it is never re-created), or -1 when
-- a new session's key is taken.
local ttl, created
if ARGV[3] == 'n' then
  if redis.call('EXISTS', KEYS[1]) == 1 then return -1 end
  created = tonumber(ARGV[4]) or now_ms()
  ttl = ttl_for(created)
  if ttl <= 0 then return 0 end
  redis.call('HSET', KEYS[1], '', created)
else
  ttl, created = live_ttl()
  if not ttl then return 0 end
  if ARGV[5] == '1' then
    redis.call('DEL', KEYS[1])
    redis.call('HSET', KEYS[1], '', created)
  end
end
local first_set = 7
local first_del = first_set + 2 * tonumber(ARGV[6])
chunked('HSET', first_set, first_del - 1, 2)
chunked('HDEL', first_del, #ARGV, 1)
redis.call('PEXPIRE', KEYS[1], ttl)
return ttl
