-- Give a permit back and tell waiters a place is free.
-- KEYS[1] sorted set of permits; ARGV[1] token, ARGV[2] channel of waiters
-- Returns 1 when a live permit was released, 0 when it was gone or expired.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score then
    return 0
end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('PUBLISH', ARGV[2], '1')
if tonumber(score) <= now then
    return 0
end
return 1
