-- Sliding window counter: the current window's count plus the previous
-- window's count weighted by how much of it still overlaps the last
-- `period` µs. Two integers per rate, whatever the limit.
-- Runs between head.lua (arguments, state) and tail.lua (writes).
-- A field holds '<window index>:<current count>:<previous count>'.
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
