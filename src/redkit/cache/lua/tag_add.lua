-- Record a cache key in one tag set (a sorted set scored by the member's
-- expiry in Redis server time): expired members are pruned and the set
-- expires with its longest-lived member.
-- KEYS[1] tag set; ARGV[1] member key, ARGV[2] member ttl in ms
redis.replicate_commands()
local px = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + px, ARGV[1])
local top = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIRE', KEYS[1], tonumber(top[2]) - now + 1000)
return 1
