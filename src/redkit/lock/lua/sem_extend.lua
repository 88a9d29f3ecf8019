-- Extend a live permit.
-- KEYS[1] sorted set of permits; ARGV[1] token, ARGV[2] new ttl in milliseconds
-- Returns 1 when extended, 0 when the permit is gone or has expired (an
-- expired permit is removed: another holder may already count on its place).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score then
    return 0
end
if tonumber(score) <= now then
    redis.call('ZREM', KEYS[1], ARGV[1])
    return 0
end
redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[2]), ARGV[1])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], last[2])
return 1
