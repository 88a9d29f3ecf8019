-- Fixed window: one counter per window of `period` µs, windows aligned on
-- Redis time (TIME), so every app server sees the same boundaries.
-- KEYS[1]   the client's state hash
-- ARGV[1]   '1' to charge the hit, '0' to only look
-- ARGV[...] per rate, five values: field, limit, period (µs), cost, burst (unused)
-- A field holds '<window index>:<count>'. The field '~exp' holds the hash's
-- expiry (ms); it is pushed out only when a state would outlive it.
-- Nothing is written unless every rate admits the hit.
-- Returns per rate: admitted (1/0), remaining, reset after (µs), retry after (µs, -1 if admitted).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local charge = ARGV[1] == '1'
local n = (#ARGV - 1) / 5
local fields = {}
for i = 1, n do fields[i] = ARGV[i * 5 - 3] end
fields[n + 1] = '~exp'
local stored = redis.call('HMGET', KEYS[1], unpack(fields))

local admit = true
local used, windows = {}, {}
for i = 1, n do
  local b = i * 5 - 3
  local limit, period, cost = tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3])
  local w = math.floor(now / period)
  local count = 0
  local s = stored[i]
  if s then
    local sw, sc = string.match(s, '^(%d+):(%d+)$')
    if tonumber(sw) == w then count = tonumber(sc) end
  end
  if count + cost > limit then admit = false end
  used[i], windows[i] = count, w
end

local out = {}
local writes = {}
local current = (tonumber(stored[n + 1]) or 0) * 1000
local extend = 0
for i = 1, n do
  local b = i * 5 - 3
  local limit, period, cost = tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3])
  local count, w = used[i], windows[i]
  local ok = count + cost <= limit
  local ends = (w + 1) * period
  if admit and charge then
    count = count + cost
    writes[#writes + 1] = fields[i]
    writes[#writes + 1] = string.format('%.0f:%.0f', w, count)
    if ends > current and ends + period > extend then extend = ends + period end
  end
  local reset = 0
  if count > 0 then reset = ends - now end
  out[#out + 1] = ok and 1 or 0
  out[#out + 1] = limit - count
  out[#out + 1] = reset
  local retry = -1
  if not ok then retry = cost > limit and -2 or (ends - now) end
  out[#out + 1] = retry
end
if #writes > 0 then
  if extend > 0 then
    local ms = string.format('%.0f', math.ceil(extend / 1000))
    writes[#writes + 1] = '~exp'
    writes[#writes + 1] = ms
    redis.call('HSET', KEYS[1], unpack(writes))
    redis.call('PEXPIREAT', KEYS[1], ms)
  else
    redis.call('HSET', KEYS[1], unpack(writes))
  end
end
return out
