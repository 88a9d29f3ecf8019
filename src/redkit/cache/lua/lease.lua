-- Read a value or take the load lease for it, in one step.
-- KEYS[1] value key, KEYS[2] lease key (same slot)
-- ARGV[1] lease token, ARGV[2] lease ttl in ms, ARGV[3] '1' = ignore the
-- stored value (the caller found it stale or unreadable)
-- Returns {1, value} | {2} lease taken | {0} someone else holds the lease
if ARGV[3] ~= '1' then
  local v = redis.call('GET', KEYS[1])
  if v then
    return {1, v}
  end
end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {2}
end
return {0}
