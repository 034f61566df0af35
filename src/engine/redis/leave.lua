#!lua
-- A connection leaves a room's presence (see join.lua); its entry goes out
-- as a leave event when the room has join and leave events.
--
-- KEYS[1]  presence expiry (sorted set)
-- KEYS[2]  presence entries (hash)
-- KEYS[3]  the room's shard channel
-- ARGV[1]  client id
-- ARGV[2]  "1" when the room has join and leave events
--
-- Returns the removed entry, or nil when the connection was not there.

local entry = redis.call('HGET', KEYS[2], ARGV[1])
if not entry then
  return false
end
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[1], ARGV[1])
if ARGV[2] == '1' then
  local header = string.char(0xB1, 3) .. string.rep('0', 16) .. string.rep('\0', 8)
  redis.call('SPUBLISH', KEYS[3], header .. entry)
end
return entry
