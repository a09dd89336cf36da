-- Slide the expiry of a session the request did not read. Never creates anything.
local ttl = live_ttl()
if not ttl then return 0 end
redis.call('PEXPIRE', KEYS[1], ttl)
return ttl
