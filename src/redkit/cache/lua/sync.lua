-- The cache's namespace generation and the server clock, in one round trip.
-- KEYS[1] generation key
return {redis.call('GET', KEYS[1]) or '0', redis.call('TIME')}
