-- Time helpers shared by every session script (the first file of each).
-- Times are Redis TIME in microseconds since the epoch (exact in a double
-- until the year 2255).

local floor = math.floor
local sfmt, ssub = string.format, string.sub

local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- Calendar arithmetic on proleptic Gregorian days since 1970-01-01.
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = floor(y / 400)
  local yoe = y - era * 400
  local mp = (m > 2) and (m - 3) or (m + 9)
  local doy = floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + floor(yoe / 4) - floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

local function civil_from_days(z)
  z = z + 719468
  local era = floor(z / 146097)
  local doe = z - era * 146097
  local yoe = floor((doe - floor(doe / 1460) + floor(doe / 36524) - floor(doe / 146096)) / 365)
  local y = yoe + era * 400
  local doy = doe - (365 * yoe + floor(yoe / 4) - floor(yoe / 100))
  local mp = floor((5 * doy + 2) / 153)
  local d = doy - floor((153 * mp + 2) / 5) + 1
  local m = (mp < 10) and (mp + 3) or (mp - 9)
  if m <= 2 then y = y + 1 end
  return y, m, d
end

-- "2026-11-26T11:04:05.123456Z" for a time in microseconds (UTC).
local function format_time(us)
  local secs = floor(us / 1000000)
  local frac = us - secs * 1000000
  local days = floor(secs / 86400)
  local rem = secs - days * 86400
  local y, m, d = civil_from_days(days)
  return sfmt('%04d-%02d-%02dT%02d:%02d:%02d.%06dZ', y, m, d,
    floor(rem / 3600), floor((rem % 3600) / 60), rem % 60, frac)
end

-- RFC 3339 text (Z or numeric offset, any number of fraction digits, which
-- are truncated to microseconds) to microseconds; nil when it does not parse.
local function parse_time(text)
  local y, mo, d, h, mi, s, rest = string.match(text,
    '^(%d%d%d%d)%-(%d%d)%-(%d%d)[Tt](%d%d):(%d%d):(%d%d)(.*)$')
  if not y then return nil end
  local frac = 0
  local digits = string.match(rest, '^%.(%d+)')
  if digits then
    rest = ssub(rest, #digits + 2)
    frac = tonumber(ssub(digits .. '000000', 1, 6))
  end
  local offset = 0
  if rest ~= 'Z' and rest ~= 'z' then
    local sign, oh, om = string.match(rest, '^([%+%-])(%d%d):(%d%d)$')
    if not sign then return nil end
    offset = tonumber(oh) * 3600 + tonumber(om) * 60
    if sign == '-' then offset = -offset end
  end
  local days = days_from_civil(tonumber(y), tonumber(mo), tonumber(d))
  local secs = days * 86400 + tonumber(h) * 3600 + tonumber(mi) * 60 + tonumber(s) - offset
  return secs * 1000000 + frac
end

