-- The fast read behind SessionStore.get. KEYS: record. ARGV[1] absolute
-- ttl in microseconds. Runs after time.lua only, not lib.lua: it does not
-- parse the record, it matches the canonical tail that both the Go service
-- and redkit write (`,"created_at":"...","expires_at":"..."}`), which can
-- only be the top level of the object.
-- Returns the record, false when there is none, or {0} when the full
-- parser must decide (another member order, or past the absolute
-- lifetime, which read.lua deletes along with its index entry).
local s = redis.call('GET', KEYS[1])
if not s then return false end
local created = string.match(s, ',"created_at":"([^"]*)","expires_at":"[^"]*"}%s*$')
local c = created and parse_time(created)
if not c or now_us() >= c + tonumber(ARGV[1]) then return {0} end
return s
