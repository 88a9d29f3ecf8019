-- Read one session. KEYS: record, [index (tagged layout)].
-- ARGV[6] mode: "get" (read only), "touch" (slide the idle timeout when it
-- would move by at least ARGV[7] microseconds), "take" (read and delete).
-- ARGV[8] the session id.
-- Returns the record text, false when there is no live session, or
-- {2, reason} for a record that does not parse.
local mode = ARGV[6]
local id = ARGV[8]
local s = redis.call('GET', KEYS[1])
if not s then return false end
-- Fast path for the common case (a live record in the canonical member
-- order, nothing to write): no full parse.
if mode ~= 'take' then
  local created = string.match(s, ',"created_at":"([^"]*)","expires_at":"[^"]*"}%s*$')
  local c = created and parse_time(created)
  if c then
    local now = now_us()
    local cap = c + ABS_US
    if now < cap then
      if mode == 'get' then return s end
      local target = now + TTL_US
      if cap < target then target = cap end
      local left = redis.call('PTTL', KEYS[1])
      if left >= 0 and target - (now + left * 1000) < tonumber(ARGV[7]) then return s end
    end
  end
end
local rec, now, idx, reply = live_record(s, KEYS[1], KEYS[2], id)
if not rec then return reply end
if mode == 'take' then
  redis.call('DEL', KEYS[1])
  if idx then redis.call('SREM', idx, id) end
  return s
end
if mode == 'touch' then
  local target = deadline(rec, now)
  local left = redis.call('PTTL', KEYS[1])
  -- A record without an expiry (written by someone else) always gets one.
  if left < 0 or target - (now + left * 1000) >= tonumber(ARGV[7]) then
    s = render_record(rec, {expires_at = quoted_time(target)})
    local ms = to_ms(target - now)
    redis.call('SET', KEYS[1], s, 'PX', ms)
    if idx then index_add(idx, id, ms) end
  end
end
return s
