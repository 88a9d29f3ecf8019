-- Move a session to a new id in one step; the old id is dead at once.
-- KEYS: old record, new record, [old index, new index (tagged layout)].
-- ARGV[6] old id, ARGV[7] new id (plain), ARGV[8] new id (JSON),
-- ARGV[9] new user id (plain) or "" to keep the user, ARGV[10] new user id
-- (JSON), ARGV[11] "1" when ARGV[9] is given, ARGV[12] tag of the new index
-- (tagged layout) or "".
-- A new user starts a new absolute lifetime (created_at = now); the same
-- user keeps created_at.
-- Returns the new record, false when there is no live session, {2, reason}
-- for a record that does not parse, {4} when the new id is taken.
local s = redis.call('GET', KEYS[1])
if not s then return false end
local rec, now, old_idx, reply = live_record(s, KEYS[1], KEYS[3], ARGV[6])
if not rec then return reply end
if redis.call('EXISTS', KEYS[2]) == 1 then return {4} end

local repl = {id = ARGV[8]}
local uid = rec.user_id
if ARGV[11] == '1' and ARGV[9] ~= uid then
  uid = ARGV[9]
  repl['user_id'] = ARGV[10]
  repl['created_at'] = quoted_time(now)
  rec.created_us = now
end
local target = deadline(rec, now)
repl['expires_at'] = quoted_time(target)
local out = render_record(rec, repl)
local ms = to_ms(target - now)
local idx = index_key(KEYS[4], uid, true)
redis.call('DEL', KEYS[1])
if old_idx then redis.call('SREM', old_idx, ARGV[6]) end
redis.call('SET', KEYS[2], out, 'PX', ms)
if idx then index_new(idx, ARGV[12], ARGV[7], ms) end
return out
