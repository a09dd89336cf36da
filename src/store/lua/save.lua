-- Write what a request changed, atomically with the expiry, and never to a session that is
-- gone. KEYS[1]: the session hash. ARGV[1]: TTL in ms. ARGV[2]: 'u' to update a live session,
-- or 'n' to create a new one with creation time ARGV[3] (the field '' holds it; user keys are
-- never empty). ARGV[4]: '1' to drop every user field first. ARGV[5]: number of fields to
-- set, followed by field/value pairs, then the fields to delete.
-- Returns 1 when written, 0 when the session is gone, -1 when a new session's key is taken.
if ARGV[2] == 'n' then
  if redis.call('EXISTS', KEYS[1]) == 1 then return -1 end
  redis.call('HSET', KEYS[1], '', ARGV[3])
elseif redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
elseif ARGV[4] == '1' then
  local created = redis.call('HGET', KEYS[1], '')
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], '', created)
end

-- HSET/HDEL in chunks, to stay within Lua's stack limit.
local function chunked(cmd, from, to, step)
  for i = from, to, 1000 * step do
    redis.call(cmd, KEYS[1], unpack(ARGV, i, math.min(to, i + 1000 * step - 1)))
  end
end
local first_del = 6 + 2 * tonumber(ARGV[5])
chunked('HSET', 6, first_del - 1, 2)
chunked('HDEL', first_del, #ARGV, 1)
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
