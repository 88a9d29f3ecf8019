-- Take a lock and draw its fencing token in one step.
-- KEYS[1] lock key, KEYS[2] fencing counter (same hash tag)
-- ARGV[1] token, ARGV[2] ttl in milliseconds
-- Returns the fencing token (>= 1) when taken; when held, minus the
-- holder's remaining ms (0 when unknown). One integer rather than a pair:
-- cheaper to build here and to parse in the client.
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
    return redis.call('INCR', KEYS[2])
end
local left = redis.call('PTTL', KEYS[1])
if left > 0 then
    return -left
end
return 0
