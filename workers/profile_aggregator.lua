-- Acknowledge profile events, and apply every delivered event to the read counts exactly once,
-- in stream order.
-- KEYS[1] profile:events (the stream), KEYS[2] {profile:events}:read-counts (sorted set),
-- KEYS[3] {profile:events}:applied-upto (the id of the last event applied). All three share the
-- stream's slot: the hash tag is the stream's whole name.
-- ARGV[1] the consumer group, ARGV[2] the most events to apply in this call, ARGV[3..] the ids
-- of events delivered to the caller and now processed.
-- Returns {acknowledged, applied, more}: how many of the given ids this call acknowledged (a
-- re-run acknowledges none), how many events it applied, and 1 when more are ready to apply.
--
-- Why a cursor: "reads since the last delete" depends on order, and consumers process batches
-- concurrently, so a later batch (a re-created profile and its reads) can be done before an
-- earlier one holding the delete. Effects therefore do not follow whichever batch a consumer
-- finishes: they follow the stream, from the cursor up to the group's last-delivered-id, read
-- from the stream itself. The cursor only moves forward, in the same script as the effects, so
-- each event is applied once whoever acknowledges it and however often; an event still pending
-- on a dead consumer is already counted, and its redelivery only acknowledges it.

local stream, counts, cursor_key = KEYS[1], KEYS[2], KEYS[3]
local group, budget = ARGV[1], tonumber(ARGV[2])

local acknowledged = 0
for i = 3, #ARGV do
  acknowledged = acknowledged + redis.call('XACK', stream, group, ARGV[i])
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
-- Redis compares the ids; an end before the start (a group moved back) reads nothing.
local page = redis.call('XRANGE', stream, '(' .. cursor, delivered, 'COUNT', budget + 1)
local applied = 0
for _, entry in ipairs(page) do
  if applied == budget then
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
  cursor = entry[1]
  applied = applied + 1
end
if applied > 0 then
  redis.call('SET', cursor_key, cursor)
end
local more = 0
if #page > budget then
  more = 1
end
return {acknowledged, applied, more}
