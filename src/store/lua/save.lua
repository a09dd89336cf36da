#!lua
-- The shebang (no flags) makes Redis refuse the whole script while it is out of memory,
-- instead of failing at its first write and leaving the rest undone.
-- Write what a request changed, atomically with the expiry, and never to a session that is
-- gone. KEYS[1]: the session hash. ARGV[1]: TTL in ms. ARGV[2]: 'u' to update a live session,
-- or 'n' to create a new one with creation time ARGV[3] (the field '' holds it; user keys are
-- never empty). ARGV[4]: '1' to drop every user field first. ARGV[5]: number of fields to
-- set, followed by field/value pairs, then the fields to delete.
-- Returns 1 when written, 0 when the session is gone, -1 when a new session's key is taken.
-- Each redis.call costs a few microseconds, so the guard doubles as the expiry refresh:
-- PEXPIRE returns 0 for a key that does not exist, and HSETNX 0 for one that does.
if ARGV[2] == 'n' then
  if redis.call('HSETNX', KEYS[1], '', ARGV[3]) == 0 then return -1 end
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
elseif redis.call('PEXPIRE', KEYS[1], ARGV[1]) == 0 then
  return 0
elseif ARGV[4] == '1' then
  local created = redis.call('HGET', KEYS[1], '')
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], '', created)
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end

-- HSET, then HDEL, in chunks that stay within Lua's stack limit.
local first_del = 6 + 2 * tonumber(ARGV[5])
for i = 6, first_del - 1, 2000 do
  redis.call('HSET', KEYS[1], unpack(ARGV, i, math.min(first_del - 1, i + 1999)))
end
for i = first_del, #ARGV, 1000 do
  redis.call('HDEL', KEYS[1], unpack(ARGV, i, math.min(#ARGV, i + 999)))
end
return 1
