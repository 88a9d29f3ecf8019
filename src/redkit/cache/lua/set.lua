-- Write one cache value; optionally release the caller's load lease, record
-- the key in tag sets and publish an invalidation message, all at once.
-- KEYS[1] value key, KEYS[2] lease key (same slot), KEYS[3..] tag sets
-- (standalone only: on a cluster tags go through tag_add.lua).
-- ARGV[1] stored bytes, ARGV[2] ttl in ms, ARGV[3] lease token ('' = none),
-- ARGV[4] channel, ARGV[5] message ('' = do not publish)
--
-- Everything that can fail is read and checked before the first write, so
-- the script either changes nothing or all of it: a script stopped halfway
-- keeps what it wrote (Redis has no rollback).
local MAX_MS = 281474976710656 -- 2^48, redkit's bound on every ttl
local px = tonumber(ARGV[2])
if not px or px < 1 or px > MAX_MS or px ~= math.floor(px) then
  return redis.error_reply('ERR cache ttl out of range: ' .. tostring(ARGV[2]))
end
local release = ARGV[3] ~= '' and redis.call('GET', KEYS[2]) == ARGV[3]
local now
local expiries = {}
if #KEYS > 2 then
  redis.replicate_commands()
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  for i = 3, #KEYS do
    local kind = redis.call('TYPE', KEYS[i])['ok']
    if kind ~= 'zset' and kind ~= 'none' then
      return redis.error_reply('WRONGTYPE cache tag set ' .. KEYS[i] .. ' holds a ' .. kind)
    end
    -- The set lives as long as its longest-lived member once this key's
    -- score is now + px: the top two members tell, whichever is this key.
    local top = now + px
    local last = redis.call('ZRANGE', KEYS[i], -2, -1, 'WITHSCORES')
    for j = 1, #last, 2 do
      local score = tonumber(last[j + 1]) or math.huge
      if last[j] ~= KEYS[1] and score > top then
        top = score
      end
    end
    if not (top - now <= MAX_MS) then
      return redis.error_reply(
        'ERR cache tag set ' .. KEYS[i] .. ' has a member expiring past any cache ttl')
    end
    expiries[i] = math.floor(top - now) + 1000
  end
end
-- The value first: on a server out of memory Redis refuses only a script's
-- first write that needs memory, so this is the one it refuses.
redis.call('SET', KEYS[1], ARGV[1], 'PX', px)
for i = 3, #KEYS do
  -- members whose keys have expired are dropped, so a tag set holds only
  -- live keys and lives exactly as long as its longest-lived member
  redis.call('ZADD', KEYS[i], now + px, KEYS[1])
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
  redis.call('PEXPIRE', KEYS[i], expiries[i])
end
if release then
  redis.call('DEL', KEYS[2])
end
if ARGV[5] ~= '' then
  redis.call('PUBLISH', ARGV[4], ARGV[5])
end
return 1
