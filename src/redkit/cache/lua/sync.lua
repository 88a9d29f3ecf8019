-- The cache's namespace generation and the server clock, in one round trip.
-- A missing generation key (new cache, or evicted) starts at a random value
-- so values written under an earlier, forgotten generation stay invisible.
-- The key is written only when it is missing, so a cache on a read-only
-- replica or a server out of memory still learns an existing generation.
-- KEYS[1] generation key; ARGV[1] the random start
local gen = redis.call('GET', KEYS[1])
if not gen then
  redis.call('SET', KEYS[1], ARGV[1])
  gen = ARGV[1]
end
return {gen, redis.call('TIME')}
