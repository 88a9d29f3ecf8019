-- Sliding log: the exact timestamps (µs) of the admitted hits of the last
-- `period` µs in a sorted set, one member per unit of cost. Rejected hits
-- are not logged, so a log never holds more than `limit` members.
-- Runs between head.lua (arguments, state) and tail.lua (writes).
-- KEYS[1 + i] the log of rate i; the state hash only lists the logs (a
-- field '1' per rate), for reset.
local function fmt(x) return string.format('%.0f', x) end

local admit = true
local counts, lasts = {}, {}
for i = 1, n do
  local b = i * 5 - 3
  local limit, period, cost = tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3])
  local log = KEYS[i + 1]
  local since = now - period
  local count
  if charge then
    redis.call('ZREMRANGEBYSCORE', log, '-inf', fmt(since))
    count = redis.call('ZCARD', log)
  else
    count = redis.call('ZCOUNT', log, '(' .. fmt(since), '+inf')
  end
  local last = nil
  if count > 0 then
    last = tonumber(redis.call('ZRANGE', log, -1, -1, 'WITHSCORES')[2])
  end
  if count + cost > limit then admit = false end
  counts[i], lasts[i] = count, last
end

for i = 1, n do
  local b = i * 5 - 3
  local limit, period, cost = tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3])
  local log = KEYS[i + 1]
  local count, last = counts[i], lasts[i]
  local ok = count + cost <= limit
  local retry = -1
  if not ok and cost > limit then
    retry = -2
  elseif not ok then
    -- the hit fits once the (count + cost - limit)-th oldest entry has aged out
    local oldest = redis.call('ZRANGEBYSCORE', log, '(' .. fmt(now - period), '+inf',
      'WITHSCORES', 'LIMIT', count + cost - limit - 1, 1)
    retry = tonumber(oldest[2]) + period - now
  end
  if admit and charge then
    -- strictly increasing per log, so members stay unique
    local ts = now
    if last and last >= ts then ts = last + 1 end
    local stamp = fmt(ts)
    local j = 1
    while j <= cost do
      local args = {}
      local top = math.min(cost, j + 499)
      for k = j, top do
        args[#args + 1] = stamp
        args[#args + 1] = stamp .. ':' .. k
      end
      redis.call('ZADD', log, unpack(args))
      j = top + 1
    end
    redis.call('PEXPIREAT', log, fmt(math.ceil((ts + period) / 1000)))
    count = count + cost
    last = ts
    if not stored[i] then
      writes[#writes + 1] = fields[i]
      writes[#writes + 1] = '1'
    end
    local need = ts + period
    if need > current and need + period > extend then extend = need + period end
  end
  local reset = 0
  if count > 0 then reset = last + period - now end
  out[#out + 1] = ok and 1 or 0
  out[#out + 1] = limit - count
  out[#out + 1] = reset
  out[#out + 1] = retry
end
