-- Delete every session of one user. KEYS: index. ARGV[6] user id (plain),
-- ARGV[7] tag of the index (tagged layout) or "".
-- Only records whose user_id is this user are deleted (another user whose
-- id hashes to the same tag shares the index key); their members leave the
-- index, as do members whose record is gone. Returns the number deleted.
local tag = ARGV[7]
if tag == '' then tag = nil end
local uid = ARGV[6]
local n = 0
for _, entry in ipairs(index_prune(KEYS[1], tag)) do
  local s = redis.call('GET', entry[2])
  local rec = s and parse_or_nil(s)
  if rec and rec.user_id == uid then
    redis.call('DEL', entry[2])
    redis.call('SREM', KEYS[1], entry[1])
    n = n + 1
  end
end
return n
