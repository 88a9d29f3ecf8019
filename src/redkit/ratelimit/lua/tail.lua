-- The last part of every rate-limit script (see head.lua): write the
-- charged states, push the hash's expiry out if a state needs it, answer.
if extend > 0 then
  local ms = string.format('%.0f', math.ceil(extend / 1000))
  writes[#writes + 1] = '~exp'
  writes[#writes + 1] = ms
  redis.call('HSET', KEYS[1], unpack(writes))
  redis.call('PEXPIREAT', KEYS[1], ms)
elseif #writes > 0 then
  redis.call('HSET', KEYS[1], unpack(writes))
end
return out
