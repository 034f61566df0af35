#!lua
-- A connection joins a room's presence: its entry is kept in a hash and
-- its expiry in a sorted set, so the entries of a node that died expire
-- (the node that owns an entry refreshes it with refresh.lua). A new entry
-- goes out on the room's channel as a join event when the room has join
-- and leave events, so every node's subscribers hear it.
--
-- KEYS[1]  presence expiry: sorted set, client id scored by expiry (ms)
-- KEYS[2]  presence entries: hash, client id to the encoded entry
-- KEYS[3]  the room's shard channel
-- ARGV[1]  client id
-- ARGV[2]  the encoded entry (src/engine/redis/payload.rs)
-- ARGV[3]  presence ttl, ms
-- ARGV[4]  "1" when the room has join and leave events
--
-- Returns 1 when the connection was not there before, else 0.

local now = redis.call('TIME')
local ms = now[1] * 1000 + math.floor(now[2] / 1000)
local added = redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[1], string.format('%d', ms + tonumber(ARGV[3])), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
if added == 1 and ARGV[4] == '1' then
  local header = string.char(0xB1, 2) .. string.rep('0', 16) .. string.rep('\0', 8)
  redis.call('SPUBLISH', KEYS[3], header .. ARGV[2])
end
return added
