#!lua
-- Pushes back the expiry of a room's presence entries that this node owns
-- (only those still there: a leave or a purge meanwhile wins), and the
-- expiry of the room's meta hash, so a room a node follows keeps its epoch
-- however long it stays quiet. See join.lua.
--
-- KEYS[1]  presence expiry (sorted set)
-- KEYS[2]  presence entries (hash)
-- KEYS[3]  meta hash
-- ARGV[1]  presence ttl, ms
-- ARGV[2]  meta ttl, ms
-- ARGV[3..] client ids
--
-- Returns the number of entries refreshed.

local now = redis.call('TIME')
local score = string.format('%d', now[1] * 1000 + math.floor(now[2] / 1000) + tonumber(ARGV[1]))
local refreshed = 0
for i = 3, #ARGV do
  refreshed = refreshed + redis.call('ZADD', KEYS[1], 'XX', 'CH', score, ARGV[i])
end
if #ARGV > 2 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  redis.call('PEXPIRE', KEYS[2], ARGV[1])
end
redis.call('PEXPIRE', KEYS[3], ARGV[2])
return refreshed
