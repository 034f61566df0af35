-- One publication to one room, in one atomic step on the Redis server that
-- owns the room's slot: every node then sees one order per room, and the
-- history and the live channel can never disagree.
--
-- The groundwork of the Redis engine (issue 10): tested on its own against
-- a real redis-server by tests/redis_publish_script.rs; the engine will load
-- it once (SCRIPT LOAD) and call it with EVALSHA.
--
-- Every key and the channel of a room carry the room's hash tag, so the
-- script touches one slot, in standalone Redis and in a Redis Cluster alike.
--
-- KEYS[1]  meta hash: e = epoch, o = last offset
-- KEYS[2]  history stream: entry id "<offset>-0", fields d = data, t = ms
-- KEYS[3]  idempotency key: its value is the offset it was given (pass any
--          key of the room's slot when the publication has no key)
-- ARGV[1]  channel (SPUBLISH)
-- ARGV[2]  data
-- ARGV[3]  history_size (publications kept; 0 keeps none)
-- ARGV[4]  history_ttl, ms (the stream's expiry; readers also skip older entries)
-- ARGV[5]  meta_ttl, ms (longer than history_ttl: the epoch outlives history)
-- ARGV[6]  idempotency window, ms
-- ARGV[7]  a fresh epoch, used only if the room has none
-- ARGV[8]  "1" when KEYS[3] is a real idempotency key
--
-- Returns {epoch, offset, duplicate (0 or 1)}. The channel message is
-- "<epoch>:<offset>:<data>" (an epoch is hex, so the first two colons split
-- it); a duplicate publishes nothing.

local meta, history, idempotency = KEYS[1], KEYS[2], KEYS[3]
local channel, data = ARGV[1], ARGV[2]
local history_size = tonumber(ARGV[3])
local history_ttl = tonumber(ARGV[4])
local meta_ttl = tonumber(ARGV[5])
local window = tonumber(ARGV[6])
local keyed = ARGV[8] == '1'

local epoch = redis.call('HGET', meta, 'e')
if not epoch then
  epoch = ARGV[7]
  redis.call('HSET', meta, 'e', epoch, 'o', 0)
end

if keyed then
  local seen = redis.call('GET', idempotency)
  if seen then
    redis.call('PEXPIRE', meta, meta_ttl)
    return {epoch, tonumber(seen), 1}
  end
end

local offset = redis.call('HINCRBY', meta, 'o', 1)
redis.call('PEXPIRE', meta, meta_ttl)

if history_size > 0 then
  local now = redis.call('TIME')
  local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  redis.call('XADD', history, 'MAXLEN', history_size, offset .. '-0', 'd', data, 't', ms)
  redis.call('PEXPIRE', history, history_ttl)
end

if keyed then
  redis.call('SET', idempotency, offset, 'PX', window)
end

redis.call('SPUBLISH', channel, epoch .. ':' .. offset .. ':' .. data)
return {epoch, offset, 0}
