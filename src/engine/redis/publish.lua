#!lua
-- One publication to one room, in one atomic step on the Redis server that
-- owns the room's slot: every node then sees one order per room, and the
-- history and the live channel can never disagree. The Redis engine will
-- load it once (SCRIPT LOAD) and call it with EVALSHA; until then it is
-- tested on its own against real redis-server processes by
-- tests/redis_scripts.rs. docs/design/cluster.md §3 has the design.
--
-- The shebang makes Redis refuse keys (and shard channels) of another slot
-- and check memory before running rather than fail half-way: a script is
-- not rolled back. Every key and the channel of a room carry its
-- partition's hash tag, in standalone Redis and in a Redis Cluster alike.
--
-- KEYS[1]  meta hash: e = epoch (16 hex digits), o = last offset
-- KEYS[2]  history stream: entry id "<offset>-0", fields d = data, t = ms
-- KEYS[3]  idempotency key: "<epoch>:<offset>:<nonce>" (the engine always
--          passes one: the client's, or one the node makes)
-- KEYS[4]  the room's shard channel
-- ARGV[1]  data
-- ARGV[2]  a fresh epoch, used only if the room has none
-- ARGV[3]  history_size (publications kept; 0 keeps none)
-- ARGV[4]  history_ttl, ms (the stream's expiry; readers skip older entries)
-- ARGV[5]  meta_ttl, ms (longer than history_ttl: the epoch outlives history)
-- ARGV[6]  the idempotency key's life, ms
-- ARGV[7]  nonce: names this attempt, so a command the client library
--          re-sends after a reconnect is answered as itself, not as a
--          duplicate
--
-- Returns {epoch, offset, duplicate (0 or 1)}. The channel message is a
-- 26-byte header, then the data: 0xB1, kind 1 (a publication), the epoch
-- (16 ASCII hex digits), the offset (u64, big-endian).

local function u64(n)
  local bytes = {}
  for i = 8, 1, -1 do
    bytes[i] = n % 256
    n = math.floor(n / 256)
  end
  return string.char(unpack(bytes))
end

local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  -- A new epoch: a stream left over belongs to none.
  epoch = ARGV[2]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'e', epoch, 'o', 0)
end

local seen = redis.call('GET', KEYS[3])
if seen then
  local seen_epoch, seen_offset, seen_nonce = string.match(seen, '^(%x+):(%d+):(.*)$')
  if seen_epoch == epoch then
    if seen_nonce == ARGV[7] then
      return {epoch, seen_offset, 0}
    end
    return {epoch, seen_offset, 1}
  end
end

local offset = redis.call('HINCRBY', KEYS[1], 'o', 1)
-- Not `offset ..`: Lua 5.1 writes large numbers as 1e+14.
local offset_text = string.format('%d', offset)
redis.call('PEXPIRE', KEYS[1], ARGV[5])

if tonumber(ARGV[3]) > 0 then
  local now = redis.call('TIME')
  local ms = string.format('%d', now[1] * 1000 + math.floor(now[2] / 1000))
  redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[3], offset_text .. '-0', 'd', ARGV[1], 't', ms)
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end

redis.call('SET', KEYS[3], epoch .. ':' .. offset_text .. ':' .. ARGV[7], 'PX', ARGV[6])
redis.call('SPUBLISH', KEYS[4], string.char(0xB1, 1) .. epoch .. u64(offset) .. ARGV[1])
return {epoch, offset_text, 0}
