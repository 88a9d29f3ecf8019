-- Take one permit of a semaphore.
-- KEYS[1] sorted set of permits (member token, score expiry in ms of Redis
-- time), KEYS[2] fencing counter (same hash tag)
-- ARGV[1] token, ARGV[2] ttl in milliseconds, ARGV[3] limit
-- Permits whose holders stopped renewing them are dropped first.
-- Returns the fencing token (>= 1) when taken; when all permits are held,
-- minus the ms until the next permit expires.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[3]) then
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
    local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
    redis.call('PEXPIREAT', KEYS[1], last[2])
    return redis.call('INCR', KEYS[2])
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return now - tonumber(first[2])
