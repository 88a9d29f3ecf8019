-- Sliding window counter: the current window's count plus the previous
-- window's count weighted by how much of it still overlaps the last
-- `period` µs. Two integers per rate, whatever the limit.
-- KEYS[1]   the client's state hash
-- ARGV[1]   '1' to charge the hit, '0' to only look
-- ARGV[...] per rate, five values: field, limit, period (µs), cost, burst (unused)
-- A field holds '<window index>:<current count>:<previous count>'. The field
-- '~exp' holds the hash's expiry (ms), pushed out only when needed.
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
local state = {}
for i = 1, n do
  local b = i * 5 - 3
  local limit, period, cost = tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3])
  local w = math.floor(now / period)
  local cur, prev = 0, 0
  local s = stored[i]
  if s then
    local sw, sc, sp = string.match(s, '^(%d+):(%d+):(%d+)$')
    sw = tonumber(sw)
    if sw == w then
      cur, prev = tonumber(sc), tonumber(sp)
    elseif sw == w - 1 then
      prev = tonumber(sc)
    end
  end
  local into = now - w * period
  local estimate = prev * (period - into) / period + cur
  if estimate + cost > limit then admit = false end
  state[i] = {w, cur, prev, into, estimate}
end

local out = {}
local writes = {}
local current = (tonumber(stored[n + 1]) or 0) * 1000
local extend = 0
for i = 1, n do
  local b = i * 5 - 3
  local limit, period, cost = tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3])
  local w, cur, prev, into, estimate = unpack(state[i])
  local ok = estimate + cost <= limit
  local retry = -1
  if not ok and cost > limit then
    retry = -2
  elseif not ok then
    if cur + cost <= limit then
      -- wait until the previous window's weight has shrunk enough
      retry = period * (1 - (limit - cur - cost) / prev) - into
    else
      -- next window: this window's count becomes the weighted one
      retry = period - into + period * (1 - (limit - cost) / cur)
    end
    retry = math.ceil(retry) + 1
  end
  if admit and charge then
    cur = cur + cost
    estimate = estimate + cost
    writes[#writes + 1] = fields[i]
    writes[#writes + 1] = string.format('%.0f:%.0f:%.0f', w, cur, prev)
    local need = (w + 2) * period
    if need > current and need + period > extend then extend = need + period end
  end
  local reset = 0
  if cur > 0 then
    reset = (w + 2) * period - now
  elseif prev > 0 then
    reset = (w + 1) * period - now
  end
  local remaining = math.floor(limit - estimate)
  if remaining < 0 then remaining = 0 end
  out[#out + 1] = ok and 1 or 0
  out[#out + 1] = remaining
  out[#out + 1] = reset
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
