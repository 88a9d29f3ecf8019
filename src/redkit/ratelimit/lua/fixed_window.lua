-- Fixed window: one counter per window of `period` µs, windows aligned on
-- Redis time. Runs between head.lua (arguments, state) and tail.lua (writes).
-- A field holds '<window index>:<count>'.
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
  local retry = -1
  if not ok then retry = cost > limit and -2 or (ends - now) end
  out[#out + 1] = ok and 1 or 0
  out[#out + 1] = limit - count
  out[#out + 1] = reset
  out[#out + 1] = retry
end
