#!lua
-- The publications from..to of one room, for recovery and for filling a
-- gap in the live feed, with the room's position. Complete only when every
-- offset of the range is still kept and not older than history_ttl (the
-- stream's expiry only frees memory; reads apply the ttl per entry, as the
-- memory engine does). docs/design/cluster.md §4.4.
--
-- KEYS[1]  meta hash (e, o)
-- KEYS[2]  history stream (entry id "<offset>-0", fields d, t)
-- ARGV[1]  from (offset, inclusive)
-- ARGV[2]  to (offset, inclusive; an empty range when below from)
-- ARGV[3]  history_ttl, ms
--
-- Returns {epoch, last offset, 1, offset1, data1, offset2, data2, ...} when
-- the range is complete, {epoch, last offset, 0} when it is not, and
-- {"", "0", 0} for a room with no epoch.

local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  return {'', '0', 0}
end
local last = redis.call('HGET', KEYS[1], 'o') or '0'
local from, to = tonumber(ARGV[1]), tonumber(ARGV[2])
if to < from then
  return {epoch, last, 1}
end
local now = redis.call('TIME')
local oldest = now[1] * 1000 + math.floor(now[2] / 1000) - tonumber(ARGV[3])
local entries = redis.call('XRANGE', KEYS[2],
  string.format('%d', from) .. '-0', string.format('%d', to) .. '-0')
local reply = {epoch, last, 1}
local expected = from
for _, entry in ipairs(entries) do
  local offset = tonumber(string.match(entry[1], '^(%d+)-'))
  local data, stamp = nil, nil
  for i = 1, #entry[2], 2 do
    if entry[2][i] == 'd' then data = entry[2][i + 1] end
    if entry[2][i] == 't' then stamp = tonumber(entry[2][i + 1]) end
  end
  if offset ~= expected or stamp == nil or stamp < oldest then
    return {epoch, last, 0}
  end
  reply[#reply + 1] = entry[1]:match('^(%d+)-')
  reply[#reply + 1] = data
  expected = expected + 1
end
if expected ~= to + 1 then
  return {epoch, last, 0}
end
return reply
