-- Release a lock held by the caller and tell waiters it is free.
-- KEYS[1] lock key; ARGV[1] token, ARGV[2] channel of the lock's waiters
-- Returns 1 when released, 0 when the key is gone or holds another token
-- (nothing is deleted then).
if redis.call('GET', KEYS[1]) == ARGV[1] then
    redis.call('DEL', KEYS[1])
    redis.call('PUBLISH', ARGV[2], '1')
    return 1
end
return 0
