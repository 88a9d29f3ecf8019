-- GCRA (a token bucket kept as one timestamp): each hit of cost c pushes the
-- theoretical arrival time (TAT) forward by c * period / limit; a hit is
-- admitted while the TAT stays within burst * period / limit of now.
-- Runs between head.lua (arguments, state) and tail.lua (writes).
-- A field holds the TAT as '<whole µs>:<fraction of a µs>', so that the
-- arithmetic below runs on small differences and stays exact.

-- float noise allowance on the small differences (µs); far below one hit
local EPS = 1e-6
local admit = true
local ahead = {}
for i = 1, n do
  local b = i * 5 - 3
  local limit, period, cost, burst =
    tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3]), tonumber(ARGV[b + 4])
  local interval = period / limit
  local d = 0
  local s = stored[i]
  if s then
    local whole, frac = string.match(s, '^(%d+):([%d%.]+)$')
    if whole then
      d = (tonumber(whole) - now) + tonumber(frac)
      if d < 0 then d = 0 end
    end
  end
  if d + cost * interval > burst * interval + EPS then admit = false end
  ahead[i] = d
end

for i = 1, n do
  local b = i * 5 - 3
  local limit, period, cost, burst =
    tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3]), tonumber(ARGV[b + 4])
  local interval = period / limit
  local cap = burst * interval
  local d = ahead[i]
  local after = d + cost * interval
  local ok = after <= cap + EPS
  local retry = -1
  if not ok then retry = cost > burst and -2 or (math.ceil(after - cap) + 1) end
  if admit and charge then
    d = after
    local whole = math.floor(d)
    writes[#writes + 1] = fields[i]
    writes[#writes + 1] = string.format('%.0f:%.9f', now + whole, d - whole)
    local need = now + d
    if need > current and need + period > extend then extend = need + period end
  end
  local remaining = math.floor((cap - d) / interval + 1e-9)
  if remaining < 0 then remaining = 0 end
  out[#out + 1] = ok and 1 or 0
  out[#out + 1] = remaining
  out[#out + 1] = math.ceil(d)
  out[#out + 1] = retry
end
