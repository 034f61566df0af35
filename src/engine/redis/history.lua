#!lua
-- A page of one room's history, as the memory engine pages it: oldest
-- first after `since`, or newest first before it (every offset when
-- `since` is 0), at most `limit`, skipping entries older than history_ttl.
-- docs/design/cluster.md §3.
--
-- KEYS[1]  meta hash (e, o)
-- KEYS[2]  history stream (entry id "<offset>-0", fields d, t)
-- ARGV[1]  since (offset)
-- ARGV[2]  limit (publications, at least 1; the caller caps it)
-- ARGV[3]  "1": newest first
-- ARGV[4]  history_ttl, ms
--
-- Returns {epoch or "", last offset, offset1, data1, offset2, data2, ...}.

local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  return {'', '0'}
end
local last = redis.call('HGET', KEYS[1], 'o') or '0'
local since, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local now = redis.call('TIME')
local oldest = now[1] * 1000 + math.floor(now[2] / 1000) - tonumber(ARGV[4])

local page = {epoch, last}
local taken = 0

-- Takes the entries that are not older than history_ttl, up to the limit.
local function take(entries)
  for _, entry in ipairs(entries) do
    if taken >= limit then
      return
    end
    local data, stamp = nil, nil
    for i = 1, #entry[2], 2 do
      if entry[2][i] == 'd' then data = entry[2][i + 1] end
      if entry[2][i] == 't' then stamp = tonumber(entry[2][i + 1]) end
    end
    if stamp ~= nil and stamp >= oldest then
      page[#page + 1] = entry[1]:match('^(%d+)-')
      page[#page + 1] = data
      taken = taken + 1
    end
  end
end

if ARGV[3] == '1' then
  -- Newest first: expired entries are the oldest, so they come last.
  local before = '+'
  if since > 0 then
    before = '(' .. string.format('%d', since) .. '-0'
  end
  take(redis.call('XREVRANGE', KEYS[2], before, '-', 'COUNT', limit))
else
  -- Oldest first: expired entries are a prefix; read past them in pages.
  local after = '(' .. string.format('%d', since) .. '-0'
  while taken < limit do
    local entries = redis.call('XRANGE', KEYS[2], after, '+', 'COUNT', limit - taken)
    if #entries == 0 then
      break
    end
    take(entries)
    after = '(' .. entries[#entries][1]
  end
end
return page
