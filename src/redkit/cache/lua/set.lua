-- Write one cache value; optionally release the caller's load lease, record
-- the key in tag sets and publish an invalidation message, all at once.
-- KEYS[1] value key, KEYS[2] lease key (same slot), KEYS[3..] tag sets
-- (standalone only: on a cluster tags go through tag_add.lua).
-- ARGV[1] stored bytes, ARGV[2] ttl in ms, ARGV[3] lease token ('' = none),
-- ARGV[4] channel, ARGV[5] message ('' = do not publish)
local px = tonumber(ARGV[2])
if #KEYS > 2 then
  redis.replicate_commands()
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  for i = 3, #KEYS do
    -- members whose keys have expired are dropped, so a tag set holds only
    -- live keys and lives exactly as long as its longest-lived member
    redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
    redis.call('ZADD', KEYS[i], now + px, KEYS[1])
    local top = redis.call('ZRANGE', KEYS[i], -1, -1, 'WITHSCORES')
    redis.call('PEXPIRE', KEYS[i], tonumber(top[2]) - now + 1000)
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', px)
if ARGV[3] ~= '' and redis.call('GET', KEYS[2]) == ARGV[3] then
  redis.call('DEL', KEYS[2])
end
if ARGV[5] ~= '' then
  redis.call('PUBLISH', ARGV[4], ARGV[5])
end
return 1
