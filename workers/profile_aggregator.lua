-- Acknowledge profile events, and apply every acknowledged event to the read counts exactly
-- once and in stream order.
-- KEYS[1] profile:events (the stream), KEYS[2] {profile:events}:read-counts (sorted set),
-- KEYS[3] {profile:events}:applied-upto (the id of the last event applied). All three share the
-- stream's slot: the hash tag is the stream's whole name.
-- ARGV[1] the consumer group, ARGV[2] the most events to apply in this call, ARGV[3..] the ids
-- of events delivered to the caller and now processed.
-- Returns {acknowledged, applied, more}: how many of the given ids this call acknowledged (a
-- re-run acknowledges none), how many events it applied, and 1 when more are ready to apply.
--
-- Why in stream order: "reads since the last delete" depends on order. Consumers process
-- batches concurrently, so a later batch (a re-created profile and its reads) can be
-- acknowledged before an earlier one (the delete). Effects therefore follow a cursor that
-- advances over events that are acknowledged: delivered to the group (id <= its
-- last-delivered-id) and no longer pending. An event still pending on a live or dead consumer
-- holds the cursor until it is processed or claimed; nothing is applied twice, because the
-- cursor only moves forward, in the same script as the effects.

local stream, counts, cursor_key = KEYS[1], KEYS[2], KEYS[3]
local group, budget = ARGV[1], tonumber(ARGV[2])

local acknowledged = 0
for i = 3, #ARGV do
  acknowledged = acknowledged + redis.call('XACK', stream, group, ARGV[i])
end

local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end

local function later(a, b)
  local ams, aseq = parse(a)
  local bms, bseq = parse(b)
  return ams > bms or (ams == bms and aseq > bseq)
end

local delivered = nil
for _, info in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
  local fields = {}
  for j = 1, #info, 2 do
    fields[info[j]] = info[j + 1]
  end
  if fields['name'] == group then
    delivered = fields['last-delivered-id']
  end
end
if delivered == nil then
  return {acknowledged, 0, 0}
end

local cursor = redis.call('GET', cursor_key) or '0-0'
local applied = 0
local more = 0
while true do
  local page = redis.call('XRANGE', stream, '(' .. cursor, '+', 'COUNT', 100)
  if #page == 0 then break end
  local blocked = false
  for _, entry in ipairs(page) do
    local id = entry[1]
    if later(id, delivered) or #redis.call('XPENDING', stream, group, id, id, 1) > 0 then
      blocked = true
      break
    end
    if applied >= budget then
      more = 1
      blocked = true
      break
    end
    local user, kind
    local fields = entry[2]
    for j = 1, #fields, 2 do
      if fields[j] == 'user' then user = fields[j + 1]
      elseif fields[j] == 'type' then kind = fields[j + 1] end
    end
    if user ~= nil then
      if kind == 'read' then
        redis.call('ZINCRBY', counts, 1, user)
      elseif kind == 'delete' then
        redis.call('ZREM', counts, user)
      end
    end
    cursor = id
    applied = applied + 1
  end
  if blocked then break end
end
if applied > 0 then
  redis.call('SET', cursor_key, cursor)
end
return {acknowledged, applied, more}
