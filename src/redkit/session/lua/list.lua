-- The live sessions of one user. KEYS: index. ARGV[6] user id (plain),
-- ARGV[7] tag of the index (tagged layout) or "".
-- Prunes members whose record is gone or past its absolute lifetime and
-- returns the records of the rest (the caller checks user ids).
local tag = ARGV[7]
if tag == '' then tag = nil end
local now = now_us()
local out = {}
for _, entry in ipairs(index_prune(KEYS[1], tag)) do
  local s = redis.call('GET', entry[2])
  local rec = s and parse_or_nil(s)
  if rec and now >= rec.created_us + ABS_US then
    redis.call('DEL', entry[2])
    redis.call('SREM', KEYS[1], entry[1])
  elseif s then
    out[#out + 1] = s
  end
end
return out
