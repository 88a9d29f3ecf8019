-- Read a current value or take the load lease for it, in one step.
-- KEYS[1] value key, KEYS[2] lease key (same slot)
-- ARGV[1] lease token, ARGV[2] lease ttl in ms, ARGV[3] the caller's
-- namespace generation as the 4 header bytes redkit stores it in, or ''
-- for the Go layout, whose plain values have no header: any value counts
-- Returns {1, value} when the key holds a current value, {2} when the
-- caller took the lease, {0} when someone else holds it.
local v = redis.call('GET', KEYS[1])
if v and (ARGV[3] == '' or (string.byte(v, 1) == 199 and string.sub(v, 3, 6) == ARGV[3])) then
  return {1, v}
end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {2}
end
return {0}
