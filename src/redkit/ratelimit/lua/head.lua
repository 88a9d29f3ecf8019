-- The first part of every rate-limit script: Script.from_package joins
-- head.lua, the algorithm's file and tail.lua into one script, so a
-- decision is still one call. Plain code rather than functions: closures
-- and calls would cost the server more than the decision itself.
-- KEYS[1]   the client's state hash
-- ARGV[1]   '1' to charge the hit, '0' to only look
-- ARGV[...] per rate, five values: field, limit, period (µs), cost, burst;
--           those of rate i start at ARGV[i * 5 - 3]
-- The field '~exp' of the hash holds its expiry (ms); the algorithm moves
-- `extend` (µs) only when a state would outlive the stored one (`current`).
-- Nothing is written unless every rate admits the hit.
-- The algorithm appends per rate to `out`: admitted (1/0), remaining,
-- reset after (µs), retry after (µs; -1 if admitted, -2 if the cost is
-- more than the rate ever admits), and the fields to set to `writes`.
local t = redis.call('TIME')
-- Redis time, so every app server sees the same clock and window boundaries
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local charge = ARGV[1] == '1'
local n = (#ARGV - 1) / 5
local fields = {}
for i = 1, n do fields[i] = ARGV[i * 5 - 3] end
fields[n + 1] = '~exp'
local stored = redis.call('HMGET', KEYS[1], unpack(fields))
local current = (tonumber(stored[n + 1]) or 0) * 1000
local extend = 0
local out, writes = {}, {}
