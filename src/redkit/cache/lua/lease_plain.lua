-- The Go layout's lease.lua: read a value or take the load lease for it, in
-- one step. A plain value has no header, so any value under the key counts.
-- KEYS[1] value key, KEYS[2] lease key (same slot)
-- ARGV[1] lease token, ARGV[2] lease ttl in ms (ARGV[3], a generation, is
-- not used: plain values have none)
-- Returns {1, value} when the key holds a value, {2} when the caller took
-- the lease, {0} when someone else holds it.
local v = redis.call('GET', KEYS[1])
if v then
  return {1, v}
end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {2}
end
return {0}
