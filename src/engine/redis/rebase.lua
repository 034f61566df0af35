#!lua
-- Gives a room a new epoch when its offset went backwards under the same
-- epoch (Redis came back from an older snapshot): offsets a subscriber
-- already saw would otherwise be handed out again with other data. Only
-- if the room is still at the epoch the caller saw; its history, which
-- belongs to the old epoch, is dropped.
--
-- KEYS[1]  meta hash (e, o)
-- KEYS[2]  history stream
-- ARGV[1]  the epoch the caller saw
-- ARGV[2]  the new epoch
--
-- Returns {epoch, last offset} after the change.

local epoch = redis.call('HGET', KEYS[1], 'e')
if epoch == ARGV[1] then
  redis.call('HSET', KEYS[1], 'e', ARGV[2])
  redis.call('DEL', KEYS[2])
  epoch = ARGV[2]
end
if not epoch then
  return {'', '0'}
end
return {epoch, redis.call('HGET', KEYS[1], 'o') or '0'}
