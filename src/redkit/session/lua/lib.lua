-- Helpers for the session scripts that change records: each such script is
-- time.lua, this file, then its own body.
--
-- ARGV[1..5] are the same for every call of a store:
--   1 layout: "t" (hash-tagged ids, index key declared) or "g" (Go layout,
--     index key built here from the user id; standalone servers only)
--   2 record key head: "app:session:" (records at head..{tag}:secret or
--     head..id)
--   3 index key head for the Go layout: "session:user:"
--   4 idle ttl in microseconds
--   5 absolute ttl in microseconds

local LAYOUT = ARGV[1]
local REC_HEAD = ARGV[2]
local IDX_HEAD = ARGV[3]
local TTL_US = tonumber(ARGV[4])
local ABS_US = tonumber(ARGV[5])

local sfind, ssub, sbyte = string.find, string.sub, string.byte

-- Minimal JSON scanning: find where values start and end without decoding
-- them, so user data is copied byte for byte (cjson would turn [] into {}
-- and round large numbers).
local function skip_ws(s, i)
  return sfind(s, '[^ \t\r\n]', i) or (#s + 1)
end

local function string_end(s, i)
  local j = i + 1
  while true do
    local q = sfind(s, '["\\]', j)
    if not q then error('unterminated string') end
    if sbyte(s, q) == 34 then return q end
    j = q + 2
  end
end

local function value_end(s, i)
  local c = sbyte(s, i)
  if c == 34 then return string_end(s, i) end
  if c == 123 or c == 91 then
    local depth, j = 0, i
    while true do
      local p = sfind(s, '[%[%]{}"]', j)
      if not p then error('unterminated container') end
      local ch = sbyte(s, p)
      if ch == 34 then
        p = string_end(s, p)
      elseif ch == 123 or ch == 91 then
        depth = depth + 1
      else
        depth = depth - 1
        if depth == 0 then return p end
      end
      j = p + 1
    end
  end
  local p = sfind(s, '[,}%] \t\r\n]', i)
  if not p then error('unterminated value') end
  if p == i then error('missing value') end
  return p - 1
end

local function decode_key(raw)
  if sfind(raw, '\\', 1, true) then return cjson.decode(raw) end
  return ssub(raw, 2, -2)
end

-- Members of the object at s[i] == '{': list of {key, rawkey, vstart, vend}
-- and the index of the closing brace.
local function members(s, i)
  if sbyte(s, i) ~= 123 then error('not an object') end
  local out = {}
  i = skip_ws(s, i + 1)
  if sbyte(s, i) == 125 then return out, i end
  while true do
    if sbyte(s, i) ~= 34 then error('expected a key') end
    local ke = string_end(s, i)
    local rawkey = ssub(s, i, ke)
    i = skip_ws(s, ke + 1)
    if sbyte(s, i) ~= 58 then error('expected a colon') end
    i = skip_ws(s, i + 1)
    local ve = value_end(s, i)
    out[#out + 1] = {decode_key(rawkey), rawkey, i, ve}
    i = skip_ws(s, ve + 1)
    local c = sbyte(s, i)
    if c == 125 then return out, i end
    if c ~= 44 then error('expected a comma') end
    i = skip_ws(s, i + 1)
  end
end

-- The parsed top level of a session record: raw value text by member name,
-- plus the member order for a faithful rewrite.
local function parse_record(s)
  local mem = members(s, skip_ws(s, 1))
  local rec = {order = {}, raw = {}, rawkey = {}}
  for _, m in ipairs(mem) do
    local name = m[1]
    if rec.raw[name] == nil then rec.order[#rec.order + 1] = name end
    rec.raw[name] = ssub(s, m[3], m[4])
    rec.rawkey[name] = m[2]
  end
  local uid = rec.raw['user_id']
  local created = rec.raw['created_at']
  if not rec.raw['id'] or not uid or not created then error('missing fields') end
  if sbyte(uid, 1) ~= 34 or sbyte(created, 1) ~= 34 then error('wrong field types') end
  rec.user_id = decode_key(uid)
  rec.created_us = parse_time(decode_key(created))
  if not rec.created_us then error('bad created_at') end
  return rec
end

-- The record text with members in `repl` (name -> raw JSON) replaced or
-- appended.
local function render_record(rec, repl)
  local parts, seen = {}, {}
  for _, name in ipairs(rec.order) do
    local v = repl[name]
    if v == nil then v = rec.raw[name] end
    parts[#parts + 1] = rec.rawkey[name] .. ':' .. v
    seen[name] = true
  end
  for _, name in ipairs({'id', 'user_id', 'data', 'created_at', 'expires_at'}) do
    if not seen[name] and repl[name] ~= nil then
      parts[#parts + 1] = '"' .. name .. '":' .. repl[name]
    end
  end
  return '{' .. table.concat(parts, ',') .. '}'
end

local function parse_or_nil(s)
  local ok, rec = pcall(parse_record, s)
  if ok then return rec end
  return nil, rec
end

-- The end of a session's life if it is active now: idle ttl from now,
-- never past created + absolute ttl.
local function deadline(rec, now)
  local d = now + TTL_US
  local cap = rec.created_us + ABS_US
  if cap < d then d = cap end
  return d
end

local function quoted_time(us)
  return '"' .. format_time(us) .. '"'
end

-- Key of the record for session `id` (an index member); nil for a member
-- that is not an id of this layout, or (tagged layout) whose tag differs
-- from the index's, so it would lie in another slot.
local function record_key(id, tag)
  if LAYOUT == 'g' then return REC_HEAD .. id end
  local t, secret = string.match(id, '^([%w_%-]+)%.([%w_%-]+)$')
  if not t or (tag and t ~= tag) then return nil end
  return REC_HEAD .. '{' .. t .. '}:' .. secret
end

-- The index key of user `uid`: the declared key in the tagged layout, built
-- from the user id in the Go layout; nil for anonymous sessions. An index
-- key holding another kind of value (not written by a store) is nil too,
-- so ending or refreshing a session never stops at it; with `strict` (a
-- new session must be indexed) it fails the script here, before anything
-- is written, with the WRONGTYPE error the store reports as "not a
-- session record".
local function index_key(declared, uid, strict)
  if uid == '' then return nil end
  local idx = declared
  if LAYOUT == 'g' then idx = IDX_HEAD .. uid end
  local t = redis.call('TYPE', idx)['ok']
  if t == 'set' or t == 'none' then return idx end
  if strict then
    error('WRONGTYPE the session index ' .. idx .. ' holds a ' .. t .. ', not a set')
  end
  return nil
end

-- Keep the index alive at least as long as a record it lists: `ms` is that
-- record's remaining life.
local function index_add(idx, id, ms)
  redis.call('SADD', idx, id)
  -- PTTL is -1 for a set SADD just made: no expiry yet.
  if redis.call('PTTL', idx) < ms then redis.call('PEXPIRE', idx, ms) end
end

-- Drop index members whose record is gone; returns the live members.
local function index_prune(idx, tag)
  local live = {}
  for _, m in ipairs(redis.call('SMEMBERS', idx)) do
    local k = record_key(m, tag)
    if k and redis.call('EXISTS', k) == 1 then
      live[#live + 1] = {m, k}
    else
      redis.call('SREM', idx, m)
    end
  end
  return live
end

-- The session record text `s` read from `key`, parsed, if the session is
-- live: returns rec, now and the user's index key (see index_key). A record
-- past its absolute timeout is ended here (deleted, and session `id` taken
-- off the index). Otherwise returns nil, nil, nil and the script's reply:
-- false for no live session, {2, reason} for a record that does not parse.
local function live_record(s, key, declared, id)
  local rec, why = parse_or_nil(s)
  if not rec then return nil, nil, nil, {2, why} end
  local now = now_us()
  local idx = index_key(declared, rec.user_id)
  if now >= rec.created_us + ABS_US then
    redis.call('DEL', key)
    if idx then redis.call('SREM', idx, id) end
    return nil, nil, nil, false
  end
  return rec, now, idx
end

-- Add new session `id` (its record lives `ms` more) to the index `idx`,
-- dropping the members whose record is gone on the way; `tag` is the
-- index's own tag, "" in the Go layout.
local function index_new(idx, tag, id, ms)
  if tag == '' then tag = nil end
  index_prune(idx, tag)
  index_add(idx, id, ms)
end

local function to_ms(us)
  local ms = floor(us / 1000)
  if ms < 1 then ms = 1 end
  return ms
end
