#!lua
-- The position of each of some rooms of one partition (one slot): the
-- first step of following a room, run once its shard channel is
-- subscribed, so every publication after the answer is heard live. A room
-- without an epoch gets one (and loses any stream left over, which belongs
-- to no epoch); every meta key's expiry is touched, so a followed room
-- keeps its epoch. docs/design/cluster.md §4.4.
--
-- KEYS     per room, its meta hash then its history stream
-- ARGV[1]  meta_ttl, ms
-- ARGV[2..] per room, a fresh epoch, used only if the room has none
--
-- Returns, per room, its epoch and last offset: {e1, o1, e2, o2, ...}.

local positions = {}
for room = 1, #KEYS / 2 do
  local meta, history = KEYS[2 * room - 1], KEYS[2 * room]
  local epoch = redis.call('HGET', meta, 'e')
  local offset = 0
  if epoch then
    offset = tonumber(redis.call('HGET', meta, 'o') or '0')
  else
    epoch = ARGV[room + 1]
    redis.call('DEL', history)
    redis.call('HSET', meta, 'e', epoch, 'o', 0)
  end
  redis.call('PEXPIRE', meta, ARGV[1])
  positions[#positions + 1] = epoch
  positions[#positions + 1] = string.format('%d', offset)
end
return positions
