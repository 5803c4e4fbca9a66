-- Retention of one profile event stream: trim the entries every consumer group is done with and
-- that are older than the retention, and forget the users deleted longer ago than that.
-- KEYS[1] the stream, KEYS[2] {<stream>}:generations, KEYS[3] {<stream>}:deleted (one slot).
-- ARGV[1] the retention in ms, ARGV[2] at most this many deleted users forgotten per run,
-- ARGV[3] the aggregator's group, ARGV[4] at most about this many entries trimmed per run.
-- Returns {entries trimmed, users forgotten, consumers removed}.
--
-- The trim point is the oldest of: the retention's cut-off, and for each consumer group its
-- oldest pending entry, or the entry after the last one it was delivered (the same floor the
-- topics trim to): so an entry that some group has not acknowledged, or not yet read, is never
-- trimmed, whatever its age. A group that stops reading holds the stream back from then on
-- (the lag gauges show it; XGROUP DESTROY a group nobody will read again).
local stream, generations, deleted = KEYS[1], KEYS[2], KEYS[3]
local retention_ms, limit, our_group = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local trim_limit = tonumber(ARGV[4])
local EXACT_AT_MOST = 1000

local function ms(number)
  return string.format('%.0f', number)
end

-- Whether stream id a comes before b, compared as the whole numbers they are (digits, no
-- leading zeros): exact whatever their size, which Lua's numbers are not past 2^53.
local function number_less(a, b)
  return #a < #b or (#a == #b and a < b)
end

local function id_less(a, b)
  local a_ms, a_seq = string.match(a, '^(%d+)-(%d+)$')
  local b_ms, b_seq = string.match(b, '^(%d+)-(%d+)$')
  if a_ms ~= b_ms then
    return number_less(a_ms, b_ms)
  end
  return number_less(a_seq, b_seq)
end

local function as_map(flat)
  local map = {}
  for i = 1, #flat, 2 do
    map[flat[i]] = flat[i + 1]
  end
  return map
end

local clock = redis.call('TIME')
local cutoff = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000) - retention_ms

local trimmed, removed = 0, 0
if redis.call('EXISTS', stream) == 1 then
  local keep = ms(math.max(cutoff, 0)) .. '-0'
  for _, raw in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
    local group = as_map(raw)
    local first
    local pending = redis.call('XPENDING', stream, group.name)
    if pending[1] > 0 then
      first = pending[2]
    else
      -- The first entry not delivered to the group yet (none: it read everything). Looked up
      -- rather than computed: an id's sequence part can exceed what a Lua number holds exactly.
      local after = redis.call('XRANGE', stream, '(' .. group['last-delivered-id'], '+', 'COUNT', 1)
      if #after > 0 then
        first = after[1][1]
      end
    end
    if first and id_less(first, keep) then
      keep = first
    end
    -- The aggregator's consumers are named by host and process: each new host (a container)
    -- adds some. One idle for longer than the retention with nothing pending is gone for good.
    if group.name == our_group and group.consumers > 0 then
      for _, raw_consumer in ipairs(redis.call('XINFO', 'CONSUMERS', stream, our_group)) do
        local consumer = as_map(raw_consumer)
        if consumer.pending == 0 and consumer.idle > retention_ms then
          redis.call('XGROUP', 'DELCONSUMER', stream, our_group, consumer.name)
          removed = removed + 1
        end
      end
    end
  end
  -- Bounded work per run: whole stream nodes first, at most trim_limit entries (a stream never
  -- trimmed before may hold millions); then, when what is left before keep is a few (the part
  -- of the node that holds keep: 100 entries or 4 KB by default), those exactly.
  trimmed = redis.call('XTRIM', stream, 'MINID', '~', keep, 'LIMIT', trim_limit)
  local left = #redis.call('XRANGE', stream, '-', '(' .. keep, 'COUNT', EXACT_AT_MOST + 1)
  if left > 0 and left <= EXACT_AT_MOST then
    trimmed = trimmed + redis.call('XTRIM', stream, 'MINID', keep)
  end
end

-- A deleted user's register entry is what tells a late event of the ended profile from one of
-- a new profile; past the retention it goes (docs/keys.md says what that leaves).
local forgotten = 0
for _, user in ipairs(redis.call('ZRANGE', deleted, '-inf', cutoff, 'BYSCORE', 'LIMIT', 0, limit)) do
  local stored = redis.call('HGET', generations, user)
  if stored and string.sub(stored, -2) == ':0' then
    redis.call('HDEL', generations, user)
    forgotten = forgotten + 1
  end
  redis.call('ZREM', deleted, user)
end
return {trimmed, forgotten, removed}
