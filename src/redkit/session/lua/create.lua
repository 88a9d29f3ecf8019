-- Create a session. KEYS: record, [index (tagged layout)].
-- ARGV[6] id (JSON), ARGV[7] user id (JSON), ARGV[8] user id (plain),
-- ARGV[9] data (JSON object), ARGV[10] the id (plain), ARGV[11] tag of the
-- index (tagged layout) or "".
-- Returns the record text, or false if the id is taken.
local now = now_us()
local uid = ARGV[8]
local rec = {created_us = now}
local target = deadline(rec, now)
local s = '{"id":' .. ARGV[6] .. ',"user_id":' .. ARGV[7] .. ',"data":' .. ARGV[9]
  .. ',"created_at":' .. quoted_time(now) .. ',"expires_at":' .. quoted_time(target) .. '}'
local ms = to_ms(target - now)
local idx = index_key(KEYS[2], uid, true)
if not redis.call('SET', KEYS[1], s, 'PX', ms, 'NX') then return false end
if idx then index_new(idx, ARGV[11], ARGV[10], ms) end
return s
