-- Merge changes into a session's data and slide its idle timeout.
-- KEYS: record, [index (tagged layout)].
-- ARGV[6] session id, ARGV[7] data size limit in bytes, ARGV[8] number of
-- changes, then per change: key, key as JSON, value as JSON ("" removes
-- the key).
-- Returns {1, record}, false when there is no live session, {2, reason}
-- for a record that does not parse, {3, size} when the merged data would
-- exceed the limit (nothing is written).
local id = ARGV[6]
local limit = tonumber(ARGV[7])
local n = tonumber(ARGV[8])
local s = redis.call('GET', KEYS[1])
if not s then return false end
local rec, now, idx, reply = live_record(s, KEYS[1], KEYS[2], id)
if not rec then return reply end

local changes, pending = {}, {}
for c = 0, n - 1 do
  local key = ARGV[9 + 3 * c]
  changes[key] = {ARGV[10 + 3 * c], ARGV[11 + 3 * c]}
  pending[#pending + 1] = key
end

local data = rec.raw['data'] or 'null'
local parts = {}
if data ~= 'null' then
  local ok, mem = pcall(members, data, 1)
  if not ok then return {2, 'data is not an object: ' .. tostring(mem)} end
  for _, m in ipairs(mem) do
    local change = changes[m[1]]
    if change == nil then
      parts[#parts + 1] = m[2] .. ':' .. ssub(data, m[3], m[4])
    else
      if change[2] ~= '' and not change.done then
        parts[#parts + 1] = m[2] .. ':' .. change[2]
      end
      change.done = true
    end
  end
end
for _, key in ipairs(pending) do
  local change = changes[key]
  if not change.done then
    change.done = true
    if change[2] ~= '' then parts[#parts + 1] = change[1] .. ':' .. change[2] end
  end
end
local merged = '{' .. table.concat(parts, ',') .. '}'
if #merged > limit then return {3, #merged} end

local target = deadline(rec, now)
s = render_record(rec, {data = merged, expires_at = quoted_time(target)})
local ms = to_ms(target - now)
redis.call('SET', KEYS[1], s, 'PX', ms)
if idx then index_add(idx, id, ms) end
return {1, s}
