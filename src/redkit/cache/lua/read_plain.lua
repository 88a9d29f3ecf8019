-- A plain value and how long it has left, in one step: what the Go layout
-- reads when early refresh or the local tier needs the expiry that redkit's
-- header would otherwise carry.
-- KEYS[1] value key
-- Returns {value, remaining ms (-1: no expiry)}, or nil when there is none.
local v = redis.call('GET', KEYS[1])
if v then
  return {v, redis.call('PTTL', KEYS[1])}
end
return false
