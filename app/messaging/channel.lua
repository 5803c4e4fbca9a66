-- What queue.lua and topic.lua share: the server's time, batched commands, a message's state
-- record and its trace. ``LuaScript.load`` puts this file in front of each of them (Redis runs
-- one text per script), so these are locals of the script that uses them.
--
-- Per message, a step should cost little more than the commands it needs (measured with
-- bench/message_commands.py and bench/messaging.py): a state record is a few MessagePack
-- values in a row (no table, no number formatting or parsing: a tenth of cjson's decode), the
-- lines of the busy steps are put together as text (cjson formats every number as a float), and
-- whole numbers become text with ``int`` (``count_text`` for small ones).

-- Time is the server's (TIME), read once per call, so leases and delays do not depend on the
-- clocks of the API processes.
local clock = redis.call('TIME')
local NOW = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)

-- A whole number as text (``tostring`` and Lua's own number-to-text go through float
-- formatting, and a number passed to redis.call is turned into text that way).
local function int(n)
  return string.format('%d', n)
end

local NOW_TEXT = int(NOW)

-- ``convert``, remembering each answer for the rest of the call.
local function remembered(convert)
  local answers = {}
  return function(value)
    local answer = answers[value]
    if not answer then
      answer = convert(value)
      answers[value] = answer
    end
    return answer
  end
end

-- Small whole numbers (attempts, priorities) as text, each formatted once per call.
local count_text = remembered(int)

-- Batches: a step that touches many messages reads and writes each hash, list or sorted set
-- once for all of them (HMGET, multi-field HSET, multi-member ZADD...) rather than once per
-- message. ``call_many`` runs ``command key args...`` in calls of at most CHUNK arguments (Lua's
-- unpack has a limit), and gathers the replies of those that answer lists.
local CHUNK = 4000

local function call_many(command, key, args)
  local replies = {}
  for start = 1, #args, CHUNK do
    local reply = redis.call(command, key, unpack(args, start, math.min(start + CHUNK - 1, #args)))
    if type(reply) == 'table' then
      for _, value in ipairs(reply) do
        replies[#replies + 1] = value
      end
    end
  end
  return replies
end

-- Append up to seven values to ``list`` (none nil but the last ones): a receive answers its
-- deliveries in a row, a fixed number of values each (numbers as integer replies: no
-- formatting), not a list per delivery.
local function append(list, a, b, c, d, e, f, g)
  local n = #list
  list[n + 1], list[n + 2], list[n + 3], list[n + 4], list[n + 5], list[n + 6], list[n + 7] =
    a, b, c, d, e, f, g
end

-- The words of a text separated by spaces (ids: a ULID has none).
local function words(text)
  local list = {}
  for word in string.gmatch(text, '%S+') do
    list[#list + 1] = word
  end
  return list
end

-- A receive's marker: the ids it leased, separated by spaces (a JSON list before).
local function marked_ids(raw)
  if string.byte(raw, 1) == 91 then
    return cjson.decode(raw)
  end
  return words(raw)
end

-- A message's state record (a queue's message, a topic group's lease) is its fields as
-- MessagePack values in a row (``cmsgpack.pack(a, b, c)``, read back by ``cmsgpack.unpack`` as
-- as many values); each script lists its fields in order. Records written as a JSON object
-- (before, and by migrate.lua) start with '{' and are still read: ``is_json``.
local function is_json(raw)
  return string.byte(raw, 1) == 123
end

-- A trace: a message's events, one JSON object per line, in a hash (message id -> lines)
-- beside a sorted set of when each trace goes (ms). A script names its own with use_traces
-- before tracing anything: the hash and set keys, and the channel each line names
-- ('queue' or 'topic', and its name).
--
-- A delivery's line is written when the delivery ends (acknowledged, nacked, expired, or its
-- lease extended), in front of the line that ends it, not when it begins: a receive then
-- writes no trace at all, and the trace is read and written once per delivery rather than
-- twice (an acknowledgement's line carries it: ``acked_line``). Until then the state record
-- keeps when it was delivered (``owed_delivery``), and reading a trace adds the deliveries
-- still in flight from those records (the 'owed' step).
-- A trace's lines are therefore in the order they were written; readers order them by time.
local traces_key, trace_expiry_key, CHANNEL_FIELD, TRACE_HEAD
-- A topic's group (',"group":"<name>"'), on the lines of lease steps (acked_line).
local GROUP_FIELD = ''

local function use_traces(traces, expiry, channel_kind, channel_name)
  traces_key, trace_expiry_key = traces, expiry
  CHANNEL_FIELD = ',"' .. channel_kind .. '":"' .. channel_name .. '"'
  TRACE_HEAD = '","at":' .. NOW_TEXT .. CHANNEL_FIELD
end

local function json_value(value)
  local kind = type(value)
  if kind == 'number' then
    if value == math.floor(value) and math.abs(value) < 1e15 then
      return int(value)
    end
    return cjson.encode(value)
  end
  if kind == 'string' and not string.find(value, '[%c"\\\128-\255]') then
    return '"' .. value .. '"'
  end
  return cjson.encode(value)
end

-- A text as a JSON string, once per call for each (names: consumers, groups).
local quoted = remembered(json_value)

-- The line of an acknowledgement, put together directly (a generic ``event_line`` costs several
-- times more per message). A receipt is the script's own (a nonce and a number: no escaping).
-- It carries the time of the delivery it ends while that delivery's line is owed
-- (``delivered_at``, nil once written): a reader makes that delivery's event from it, with the
-- same consumer and attempt, so the busiest step writes one line per message, not two.
local function acked_line(consumer, attempt, receipt, delivered_at)
  local tail = delivered_at and (',"delivered_at":' .. int(delivered_at) .. '}') or '}'
  return '{"event":"acked' .. TRACE_HEAD .. GROUP_FIELD .. ',"consumer":' .. quoted(consumer)
    .. ',"attempt":' .. count_text(attempt) .. ',"r":"' .. receipt .. '"' .. tail
end

-- The line of a delivery made at ``at`` (ms), which its trace is owed while it lasts, and a
-- newline; '' when ``at`` is nil (the line is written already, or by an earlier version at
-- the delivery itself).
local function owed_delivery(consumer, attempt, at)
  if not at then
    return ''
  end
  return '{"event":"delivered","at":' .. int(at) .. CHANNEL_FIELD .. GROUP_FIELD
    .. ',"consumer":' .. quoted(consumer) .. ',"attempt":' .. count_text(attempt) .. '}\n'
end

-- One event as its trace line: ``event_line('acked', 'consumer', c, 'attempt', 2)``; a nil
-- value leaves its field out. Names, the channel's and consumers' names are plain ASCII
-- (schemas.check_name), so they need no escaping.
local function event_line(event, ...)
  local parts = { '{"event":"', event, TRACE_HEAD }
  for i = 1, select('#', ...), 2 do
    local name, value = select(i, ...)
    if value ~= nil then
      parts[#parts + 1] = ',"' .. name .. '":' .. json_value(value)
    end
  end
  parts[#parts + 1] = '}'
  return table.concat(parts)
end

-- Append ``text`` (lines) to the trace of ``id`` (the steps that touch one message).
local function append_trace(id, text)
  local old = redis.call('HGET', traces_key, id)
  redis.call('HSET', traces_key, id, old and (old .. '\n' .. text) or text)
end

-- Append one event to the trace of ``id``.
local function trace(id, event, ...)
  append_trace(id, event_line(event, ...))
end

-- Append lines[i] to the trace of ids[i], for every i: one HMGET, one HSET.
local function trace_many(ids, lines)
  if #ids == 0 then
    return
  end
  local old = call_many('HMGET', traces_key, ids)
  local args = {}
  for i, id in ipairs(ids) do
    args[#args + 1] = id
    args[#args + 1] = old[i] and (old[i] .. '\n' .. lines[i]) or lines[i]
  end
  call_many('HSET', traces_key, args)
end

local function traced(id)
  return redis.call('HEXISTS', traces_key, id) == 1
end

-- Whether the trace of ``id`` holds ``event`` carrying this receipt (and group, for a topic):
-- the step already ran, and this call is a re-send of it. (A trace is short: a few events per
-- delivery, at most 100 deliveries.)
local function already(id, event, receipt, group)
  local raw = redis.call('HGET', traces_key, id)
  if not raw then
    return false
  end
  for line in string.gmatch(raw, '[^\n]+') do
    local seen = cjson.decode(line)
    if seen.event == event and seen.r == receipt and seen.group == group then
      return true
    end
  end
  return false
end

-- The traces of messages finished together expire together: the expiry set has one member per
-- batch of up to EXPIRY_BATCH of them, their ids separated by spaces (a member per message
-- would cost a ZADD and a ZREM each). Members an earlier version wrote name one id each.
local EXPIRY_BATCH = 100

-- The traces of ``ids`` go at ``at`` (ms, as text).
local function expire_traces(ids, at)
  for start = 1, #ids, EXPIRY_BATCH do
    redis.call('ZADD', trace_expiry_key, at,
      table.concat(ids, ' ', start, math.min(start + EXPIRY_BATCH - 1, #ids)))
  end
end

-- Remove the traces whose time is up, batch by batch, until at least ``limit`` of them (at
-- most a batch more) or none is left.
local function sweep(limit)
  local due = redis.call('ZRANGEBYSCORE', trace_expiry_key, '-inf', NOW, 'LIMIT', 0, limit)
  local swept, removed = {}, 0
  for _, member in ipairs(due) do
    if removed >= limit then
      break
    end
    local ids = words(member)
    call_many('HDEL', traces_key, ids)
    removed = removed + #ids
    swept[#swept + 1] = member
  end
  call_many('ZREM', trace_expiry_key, swept)
end


-- A receive call's leases are kept together: one member of the channel's lease-end sets for the
-- call ('@' and its nonce), and a calls hash with the call's message ids (field: the nonce) and
-- how many of them it still leases (the nonce and ':count'), not a member per message. Each
-- script says which keys those are with use_calls, and what a member's score is; a message that
-- leaves its call early enough to need one gets a member of its own (see queue.lua, topic.lua).
local CALL = '@'
local calls_key, call_sets

local function use_calls(calls, sets)
  calls_key, call_sets = calls, sets
end

-- The nonce of the call that granted ``receipt`` ('<nonce>.<n>'; a nonce has no dot).
local function nonce_of(receipt)
  local dot = string.find(receipt, '.', 1, true)
  return dot and string.sub(receipt, 1, dot - 1)
end

-- Record the call ``nonce`` leasing ``ids`` (the text of them, separated by spaces, which the
-- receive marker keeps too), with its member of each set at ``scores`` (in use_calls' order).
local function open_call(nonce, ids, listed, scores)
  redis.call('HSET', calls_key, nonce, listed, nonce .. ':count', #ids)
  for i, key in ipairs(call_sets) do
    redis.call('ZADD', key, scores[i], CALL .. nonce)
  end
end

-- Remove the call ``nonce``: its record and its members.
local function drop_call(nonce)
  redis.call('HDEL', calls_key, nonce, nonce .. ':count')
  for _, key in ipairs(call_sets) do
    redis.call('ZREM', key, CALL .. nonce)
  end
end

-- Take the call ``nonce`` apart (its leases ended): remove it; answer the ids it leased and the
-- score of its member in the first set (when its leases ended).
local function take_call(nonce)
  local listed = redis.call('HGET', calls_key, nonce)
  local ended_at = redis.call('ZSCORE', call_sets[1], CALL .. nonce)
  drop_call(nonce)
  return listed and words(listed) or {}, ended_at
end

-- ``n`` messages of the call ``nonce`` left it; its members go with the last one. Answers
-- false when the call has no record (taken apart already, or a lease of an earlier layout).
local function leave_call(nonce, n)
  local count_field = nonce .. ':count'
  local left = redis.call('HGET', calls_key, count_field)
  if not left then
    return false
  end
  left = tonumber(left) - n
  if left > 0 then
    redis.call('HSET', calls_key, count_field, left)
  else
    drop_call(nonce)
  end
  return true
end

-- The messages one step takes out of their calls, grouped by the call their receipts name:
-- ``add(receipt, id)`` each, then ``leave(own)``: each call loses its messages (one update per
-- call), and ``own(ids)``, if given, gets those of a call without a record.
local function leaving_calls()
  local nonces, ids_of = {}, {}
  local step = {}
  function step.add(receipt, id)
    local nonce = nonce_of(receipt) or ''
    local ids = ids_of[nonce]
    if not ids then
      ids = {}
      ids_of[nonce] = ids
      nonces[#nonces + 1] = nonce
    end
    ids[#ids + 1] = id
  end
  function step.leave(own)
    for _, nonce in ipairs(nonces) do
      if not leave_call(nonce, #ids_of[nonce]) and own then
        own(ids_of[nonce])
      end
    end
  end
  return step
end
