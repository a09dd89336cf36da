#!lua
-- The shebang (no flags) makes Redis refuse the whole script while it is out of memory,
-- instead of failing at its first write and leaving the rest undone.
-- Write what a request changed, atomically with the expiry, and never to a session that is
-- gone or ended. KEYS[1]: the session hash. ARGV[1]: TTL in ms. ARGV[2]: 'u' to update a
-- live session, or 'n' to create a new one with creation time ARGV[3] (the field '' holds it;
-- user keys are never empty). ARGV[4]: '1' to drop every user field first (the metadata
-- stays). ARGV[5], ARGV[6]: the most keys and bytes the session may hold, checked here when
-- the request never loaded it ('0': checked already). ARGV[7]: number of fields to set,
-- followed by field/value pairs, then the fields to delete.
-- Returns 1 when written, 0 when there is no session, -1 when a new session's key is taken,
-- -2 when the session was ended (see end.lua), {-3, keys} or {-4, bytes} over a limit.
local first_set = 8
local first_del = first_set + 2 * tonumber(ARGV[7])
if ARGV[2] == 'n' then
  if redis.call('HSETNX', KEYS[1], '', ARGV[3]) == 0 then return -1 end
else
  local created = redis.call('HGET', KEYS[1], '')
  if not created then return 0 end
  if created == 'ended' then return -2 end
  if ARGV[5] ~= '0' then
    local size, keys, bytes = {}, 0, 0
    if ARGV[4] ~= '1' then
      local all = redis.call('HGETALL', KEYS[1])
      for i = 1, #all, 2 do
        if all[i] ~= '' and string.byte(all[i], 1) ~= 0 then
          size[all[i]] = #all[i] + #all[i + 1]
          keys, bytes = keys + 1, bytes + size[all[i]]
        end
      end
    end
    for i = first_set, first_del - 1, 2 do
      local f = ARGV[i]
      if string.byte(f, 1) ~= 0 then
        if size[f] then bytes = bytes - size[f] else keys = keys + 1 end
        size[f] = #f + #ARGV[i + 1]
        bytes = bytes + size[f]
      end
    end
    for i = first_del, #ARGV do
      local f = ARGV[i]
      if size[f] then keys, bytes, size[f] = keys - 1, bytes - size[f], nil end
    end
    if keys > tonumber(ARGV[5]) then return {-3, keys} end
    if bytes > tonumber(ARGV[6]) then return {-4, bytes} end
  end
  if ARGV[4] == '1' then
    -- Every key of the session goes; its metadata ('' and the '\0' fields: the creation
    -- time, the public id, the user it is bound to, its idle timeout) stays.
    local drop = {}
    for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
      if f ~= '' and string.byte(f, 1) ~= 0 then drop[#drop + 1] = f end
    end
    for i = 1, #drop, 1000 do
      redis.call('HDEL', KEYS[1], unpack(drop, i, math.min(#drop, i + 999)))
    end
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])

-- HSET, then HDEL, in chunks that stay within Lua's stack limit.
for i = first_set, first_del - 1, 2000 do
  redis.call('HSET', KEYS[1], unpack(ARGV, i, math.min(first_del - 1, i + 1999)))
end
for i = first_del, #ARGV, 1000 do
  redis.call('HDEL', KEYS[1], unpack(ARGV, i, math.min(#ARGV, i + 999)))
end
return 1
