-- Record a cache key in one tag set (a sorted set scored by the member's
-- expiry in Redis server time): expired members are pruned and the set
-- expires with its longest-lived member. Everything is checked before the
-- first write, so the set is either left alone or fully updated.
-- KEYS[1] tag set; ARGV[1] member key, ARGV[2] member ttl in ms
local MAX_MS = 281474976710656 -- 2^48, redkit's bound on every ttl
local px = tonumber(ARGV[2])
if not px or px < 1 or px > MAX_MS or px ~= math.floor(px) then
  return redis.error_reply('ERR cache ttl out of range: ' .. tostring(ARGV[2]))
end
redis.replicate_commands()
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind ~= 'zset' and kind ~= 'none' then
  return redis.error_reply('WRONGTYPE cache tag set ' .. KEYS[1] .. ' holds a ' .. kind)
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local top = now + px
local last = redis.call('ZRANGE', KEYS[1], -2, -1, 'WITHSCORES')
for j = 1, #last, 2 do
  local score = tonumber(last[j + 1]) or math.huge
  if last[j] ~= ARGV[1] and score > top then
    top = score
  end
end
if not (top - now <= MAX_MS) then
  return redis.error_reply(
    'ERR cache tag set ' .. KEYS[1] .. ' has a member expiring past any cache ttl')
end
-- ZADD first: on a server out of memory Redis refuses only a script's first
-- write that needs memory, so this is the one it refuses.
redis.call('ZADD', KEYS[1], now + px, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('PEXPIRE', KEYS[1], math.floor(top - now) + 1000)
return 1
