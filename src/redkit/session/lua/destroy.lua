-- Delete one session and its index entry. KEYS: record, [index (tagged
-- layout)]. ARGV[6] the session id. Returns 1 when it existed, else 0.
local s = redis.call('GET', KEYS[1])
if not s then return 0 end
redis.call('DEL', KEYS[1])
local rec = parse_or_nil(s)
if rec then
  local idx = index_key(KEYS[2], rec.user_id)
  if idx then redis.call('SREM', idx, ARGV[6]) end
end
return 1
