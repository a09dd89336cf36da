-- Shared by every script (prepended at build time). KEYS[1] is the session hash;
-- ARGV[1] is the idle timeout and ARGV[2] the absolute timeout, both in milliseconds.
-- The field '' holds the creation time in ms; user keys are never empty, so it cannot clash.

local function now_ms()
  local t = redis.call('TIME')
  return t[1] * 1000 + math.floor(t[2] / 1000)
end

-- Idle timeout, cut short by the absolute timeout.
local function ttl_for(created)
  return math.min(tonumber(ARGV[1]), created + tonumber(ARGV[2]) - now_ms())
end

-- Remaining life of the live session at KEYS[1], or nil when it is gone. A session past its
-- absolute timeout is deleted here, so nobody sees it again.
local function live_ttl()
  local created = tonumber(redis.call('HGET', KEYS[1], ''))
  if not created then return nil end
  local ttl = ttl_for(created)
  if ttl <= 0 then
    redis.call('DEL', KEYS[1])
    return nil
  end
  return ttl, created
end

-- Calls HSET/HDEL with ARGV[from..to], in chunks that stay within Lua's stack limit.
local function chunked(cmd, from, to, step)
  for i = from, to, 1000 * step do
    redis.call(cmd, KEYS[1], unpack(ARGV, i, math.min(to, i + 1000 * step - 1)))
  end
end

