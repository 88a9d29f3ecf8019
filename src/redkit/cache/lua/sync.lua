-- The cache's namespace generation and the server clock, in one round trip.
-- A missing generation key (new cache, or evicted) starts at a random value
-- so values written under an earlier, forgotten generation stay invisible.
-- KEYS[1] generation key; ARGV[1] the random start
redis.call('SET', KEYS[1], ARGV[1], 'NX')
return {redis.call('GET', KEYS[1]), redis.call('TIME')}
