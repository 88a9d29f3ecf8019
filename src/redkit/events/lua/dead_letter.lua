-- Move one pending stream entry to the dead-letter stream, atomically.
-- KEYS[1] the stream, KEYS[2] its dead-letter stream (same hash slot)
-- ARGV[1] group, ARGV[2] entry id, ARGV[3] dead-letter MAXLEN (approximate),
-- ARGV[4..] field/value pairs of the dead-letter entry.
-- The entry is acknowledged first; only if it was still pending is the
-- dead-letter entry written, so two consumers racing on one entry write one.
local acked = redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
if acked == 0 then
    return false
end
local fields = {}
for i = 4, #ARGV do
    fields[#fields + 1] = ARGV[i]
end
return redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', unpack(fields))
