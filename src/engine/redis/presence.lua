#!lua
-- Who is in a room: first purges the entries whose node stopped refreshing
-- them (each goes out as a leave event when the room has join and leave
-- events), then returns every entry left. See join.lua.
--
-- KEYS[1]  presence expiry (sorted set)
-- KEYS[2]  presence entries (hash)
-- KEYS[3]  the room's shard channel
-- ARGV[1]  "1" when the room has join and leave events
--
-- Returns the encoded entries, in no order.

local now = redis.call('TIME')
local ms = now[1] * 1000 + math.floor(now[2] / 1000)
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', string.format('%d', ms))
for _, client in ipairs(expired) do
  local entry = redis.call('HGET', KEYS[2], client)
  redis.call('HDEL', KEYS[2], client)
  redis.call('ZREM', KEYS[1], client)
  if entry and ARGV[1] == '1' then
    local header = string.char(0xB1, 3) .. string.rep('0', 16) .. string.rep('\0', 8)
    redis.call('SPUBLISH', KEYS[3], header .. entry)
  end
end
return redis.call('HVALS', KEYS[2])
