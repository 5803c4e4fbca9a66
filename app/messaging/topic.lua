-- Every step on a topic, as one script: ARGV[1] names the step.
-- KEYS (every key the script touches is declared, all in the topic's slot; see keys.py):
--   1 config (hash), 2 stream (entries: id, body, published_at; the consumer groups live
--   inside it), 3 traces (hash: message id -> its events, one JSON object per line), 4 trace
--   expiry (sorted set: message id -> when its trace goes, ms), 5 holds (hash: group -> how
--   many messages it holds and its oldest held entry), 6 waiting traces (sorted set: message
--   id -> its entry, ``finish``); a step that names a group adds 7 the group's leases, 8 their
--   ends, 9 its dead letters, 10 its held entries and 11 its receive calls; then the step's
--   markers (de-duplication, receive), which the caller names.
-- ARGV[2..3]: the topic's name, the trace retention (s); the step's own arguments follow.
--
-- Leases are kept by the scripts, not by the stream's pending list: per group, a hash of the
-- messages it has leased (message id -> entry id, receipt, consumer, delivery count, nacked), a
-- sorted set of when the leases end, and a sorted set of the entries it holds (as numbers,
-- ``entry_score``), from the first delivery until the group acknowledges or dead-letters the
-- message. A receive call's deliveries are leased and held together (see ``leave_call``): the
-- two sets get one member for the call, not one per message; a message nacked, or leased by an
-- earlier version, has members of its own. Groups read with XREADGROUP ... NOACK: the stream's
-- own pending list (one entry per delivery, replicated as one XCLAIM per message) would only
-- repeat those records. The topic's holds hash keeps each group's count and oldest held entry,
-- so trimming and the metrics read every group's without naming its keys. Entries delivered
-- by an earlier version are still in the pending list: they are acknowledged there when the
-- group is done with them, and trimming looks at the pending list while it is not empty.
-- A lease's end is fixed when it is granted, so changing the topic's visibility timeout later
-- does not shorten leases already held, and receipts are random per delivery.
-- channel.lua comes first (NOW, call_many, state records, traces).
local config_key, stream_key, holds_key, waiting_key = KEYS[1], KEYS[2], KEYS[5], KEYS[6]
local op, topic, retention = ARGV[1], ARGV[2], tonumber(ARGV[3])
use_traces(KEYS[3], KEYS[4], 'topic', topic)

local NOT_FOUND, WRONG_RECEIPT, GROUP_NOT_FOUND = -1, -2, -5
-- Keys per group (keys.group_keys), after the topic's six.
local GROUP_KEYS = 5
-- XREADGROUP names a consumer; the group's leases say which consumer holds what.
local LEASE_OWNER = 'leases'

-- Messages this call dead-lettered: a receive answers it last, for the metrics.
local dead_count = 0

-- A trace lives until every group is done with its message, then ``retention`` seconds more:
-- the trace expiry set says when, and the publish and ack steps sweep the due ones (``sweep``).
local EXPIRES_TEXT = int(NOW + retention * 1000)

local function as_map(flat)
  local map = {}
  for i = 1, #flat, 2 do
    map[flat[i]] = flat[i + 1]
  end
  return map
end

-- An entry's fields (id, body, published_at), read in the order publish wrote them.
local function entry_map(flat)
  if flat[1] == 'id' and flat[3] == 'body' and flat[5] == 'published_at' and not flat[7] then
    return { id = flat[2], body = flat[4], published_at = flat[6] }
  end
  return as_map(flat)
end

-- Stream ids compare as (milliseconds, sequence) pairs.
local function parse_id(id)
  local dash = string.find(id, '-', 1, true)
  return tonumber(string.sub(id, 1, dash - 1)), tonumber(string.sub(id, dash + 1))
end

local function id_less(a, b)
  local a_ms, a_seq = parse_id(a)
  local b_ms, b_seq = parse_id(b)
  return a_ms < b_ms or (a_ms == b_ms and a_seq < b_seq)
end

-- A held entry's score: its id as one number, milliseconds * 1000 + sequence, put together as
-- text (the milliseconds, then the sequence in three digits: no arithmetic, a third of the
-- cost), exact in a double until the year 2255. A sequence past 999 (more than 1000 entries
-- added in one millisecond) counts as 999: the score then names an entry at or before its
-- own, so trimming keeps more, never less.
local SEQUENCES = 1000
local find, sub = string.find, string.sub

local sequence_digits = remembered(function(seq)
  return string.format('%03d', math.min(tonumber(seq), SEQUENCES - 1))
end)

local function entry_score(entry_id)
  local dash = find(entry_id, '-', 1, true)
  return sub(entry_id, 1, dash - 1) .. sequence_digits(sub(entry_id, dash + 1))
end

local function score_id(score)
  local seq = score % SEQUENCES
  return int((score - seq) / SEQUENCES) .. '-' .. int(seq)
end

local groups_cache = nil
local function groups()
  if groups_cache == nil then
    groups_cache = {}
    if redis.call('EXISTS', stream_key) == 1 then
      for _, raw in ipairs(redis.call('XINFO', 'GROUPS', stream_key)) do
        groups_cache[#groups_cache + 1] = as_map(raw)
      end
    end
  end
  return groups_cache
end

local holds_cache = nil
local function holds()
  if holds_cache == nil then
    holds_cache = as_map(redis.call('HGETALL', holds_key))
  end
  return holds_cache
end

-- The score of a group's oldest held entry (its holds record), or nil when it holds none.
local function oldest_held(group)
  local record = holds()[group.name]
  return record and tonumber(string.match(record, ' (%d+)$'))
end

-- The first entry a group still needs: the oldest it holds (its holds record, or its pending
-- list for entries delivered by an earlier version), else the one after the last delivered.
local function first_needed(group)
  local last_ms, last_seq = parse_id(group['last-delivered-id'])
  local first = int(last_ms) .. '-' .. int(last_seq + 1)
  local oldest = oldest_held(group)
  if oldest then
    local held = score_id(oldest)
    if id_less(held, first) then
      first = held
    end
  end
  if group.pending > 0 then
    local pending = redis.call('XPENDING', stream_key, group.name)
    if pending[1] > 0 and id_less(pending[2], first) then
      first = pending[2]
    end
  end
  return first
end

-- Drop the entries every group is done with: those before the first entry that some group
-- still needs. Never by length or age, so an entry a group has not acknowledged stays; a
-- topic without groups keeps everything (a group created later from the earliest gets it).
-- The waiting traces of the messages it drops now expire (see finish). Runs after a step that
-- released something.
local TRIM_LIMIT = 1000

local function trim()
  if #groups() == 0 then
    return
  end
  local keep = nil
  for _, group in ipairs(groups()) do
    local first = first_needed(group)
    if keep == nil or id_less(first, keep) then
      keep = first
    end
  end
  local due = redis.call('ZRANGEBYSCORE', waiting_key, '-inf', '(' .. entry_score(keep), 'LIMIT',
    0, TRIM_LIMIT)
  if #due > 0 then
    expire_traces(due, EXPIRES_TEXT)
    call_many('ZREM', waiting_key, due)
  end
  redis.call('XTRIM', stream_key, 'MINID', keep)
end

if op == 'create' then
  local existed = redis.call('EXISTS', config_key) == 1
  redis.call('HSET', config_key, 'visibility_timeout_ms', ARGV[4], 'max_deliveries', ARGV[5])
  if existed then
    return { 0 }
  end
  redis.call('HSET', config_key, 'created_at', NOW_TEXT)
  return { 1 }
end

local c = redis.call('HMGET', config_key, 'visibility_timeout_ms', 'max_deliveries', 'created_at')
if not c[1] then
  return { NOT_FOUND }
end
local cfg = { visibility = tonumber(c[1]), max = tonumber(c[2]) }

if op == 'config' then
  -- ARGV[4..]: the groups the caller found; KEYS[7..]: each one's leases, lease ends and dead
  -- letters, in that order. A group gone since is left out; one created since is not listed.
  local current = {}
  for _, group in ipairs(groups()) do
    current[group.name] = group
  end
  local listed = {}
  for i = 4, #ARGV do
    local group = current[ARGV[i]]
    if group then
      local base = 7 + (i - 4) * GROUP_KEYS
      listed[#listed + 1] = { group.name, redis.call('HLEN', KEYS[base]), group.lag or -1,
        redis.call('LLEN', KEYS[base + 2]) }
    end
  end
  return { 1, c[1], c[2], c[3], redis.call('XLEN', stream_key), listed }
end

if op == 'create_group' then
  local reply = redis.pcall('XGROUP', 'CREATE', stream_key, ARGV[4], ARGV[5], 'MKSTREAM')
  if type(reply) == 'table' and reply.err then
    if string.find(reply.err, 'BUSYGROUP', 1, true) then
      return { 1, 0 }
    end
    return redis.error_reply(reply.err)
  end
  return { 1, 1 }
end

if op == 'publish' then
  -- ARGV[4]: de-duplication window (ms), ARGV[5]: how many due traces to sweep; then per
  -- message: id, body, dedupe id ('' for none), the index in KEYS of its de-duplication
  -- marker ('0' for none). Answers each message's id and whether this call published it (a
  -- re-sent call, redis-py's after a lost reply, finds its own message and answers the same).
  local window = ARGV[4]
  local out = {}
  local ids = {}
  for i = 6, #ARGV, 4 do
    ids[#ids + 1] = ARGV[i]
  end
  -- Which of these this call published already (a re-send: their trace exists).
  local seen = call_many('HMGET', traces_key, ids)
  local traces, expiring = {}, {}
  local no_group = #groups() == 0
  for k, id in ipairs(ids) do
    local i = 6 + (k - 1) * 4
    local body, marker_index = ARGV[i + 1], tonumber(ARGV[i + 3])
    local first = nil
    if marker_index > 0 then
      local marker = KEYS[marker_index]
      first = redis.call('GET', marker)
      if not first then
        redis.call('SET', marker, id, 'PX', window)
      end
    end
    if first and first ~= id then
      out[#out + 1] = { first, 0 }
    elseif seen[k] then
      out[#out + 1] = { id, 1 }
    else
      local entry = redis.call('XADD', stream_key, '*', 'id', id, 'body', body,
        'published_at', NOW_TEXT)
      traces[#traces + 1] = id
      traces[#traces + 1] = '{"event":"published' .. TRACE_HEAD .. ',"entry":"' .. entry .. '"}'
      if no_group then
        -- No group to wait for: the entry stays (a group created later from the earliest
        -- gets it), but the trace ages out.
        expiring[#expiring + 1] = id
      end
      out[#out + 1] = { id, 1 }
    end
  end
  call_many('HSET', traces_key, traces)
  expire_traces(expiring, EXPIRES_TEXT)
  sweep(tonumber(ARGV[5]))
  return { 1, out }
end

-- A lease (a record of channel.lua), in this order: e the entry id, r the receipt ('' once
-- nacked), c the consumer, n the delivery count, k whether it was nacked, w when it was
-- delivered, while its trace line is owed (``owed_delivery``).
local function decode_lease(raw)
  if is_json(raw) then
    local lease = cjson.decode(raw)
    return lease.e, lease.r, lease.c, lease.n, lease.k, lease.w
  end
  return cmsgpack.unpack(raw)
end

if op == 'owed' then
  -- ARGV[4]: a message id; ARGV[5..]: the groups the caller found, KEYS[7..]: the keys of
  -- each (keys.group_keys). Answers the lines its trace is owed for deliveries in flight.
  local lines = {}
  for i = 5, #ARGV do
    local raw = redis.call('HGET', KEYS[7 + (i - 5) * GROUP_KEYS], ARGV[4])
    if raw then
      local _, _, consumer, count, nacked, delivered_at = decode_lease(raw)
      if not nacked and delivered_at then
        GROUP_FIELD = ',"group":' .. quoted(ARGV[i])
        lines[#lines + 1] = owed_delivery(consumer, count, delivered_at)
      end
    end
  end
  return { 1, table.concat(lines) }
end

-- Every remaining step names a group.
local group = ARGV[4]
local leases_key, ends_key, dead_key, held_key = KEYS[7], KEYS[8], KEYS[9], KEYS[10]
local this_group = nil
for _, listed in ipairs(groups()) do
  if listed.name == group then
    this_group = listed
  end
end
if not this_group then
  return { GROUP_NOT_FOUND }
end
GROUP_FIELD = ',"group":' .. quoted(group)
-- Entries an earlier version delivered are in the group's pending list until it is done.
local LEGACY_PENDING = this_group.pending > 0

-- Write the group's count and oldest held entry to the topic's holds hash, after a step that
-- changed what it holds.
local function update_holds()
  local count = redis.call('HLEN', leases_key)
  local record = nil
  if count == 0 then
    redis.call('HDEL', holds_key, group)
  else
    local oldest = redis.call('ZRANGE', held_key, 0, 0, 'WITHSCORES')[2]
    record = int(count)
    if oldest then
      record = record .. ' ' .. int(tonumber(oldest))
    end
    redis.call('HSET', holds_key, group, record)
  end
  if holds_cache then
    holds_cache[group] = record
  end
end

local function entry_fields(entry_id)
  local entry = redis.call('XRANGE', stream_key, entry_id, entry_id)[1]
  if not entry then
    return nil
  end
  return entry_map(entry[2])
end

-- This group is done with the messages ``ids`` (entries ``entries``): their traces expire
-- after the retention when no other group needs them any more, which the groups' records tell
-- without naming their keys: another group is done with an entry when it was delivered to it
-- (not after its last delivered) and it is before the oldest entry that group holds. When
-- that cannot be told (an entry within another group's holds, or one with entries of an
-- earlier version pending), the trace waits in the topic's waiting set until trimming drops
-- its entry, which is when every group is done with it. A topic with one group never waits.
local function finish(ids, entries)
  local others = {}
  for _, listed in ipairs(groups()) do
    if listed.name ~= group then
      local last_ms, last_seq = parse_id(listed['last-delivered-id'])
      others[#others + 1] = { last_ms = last_ms, last_seq = last_seq,
        oldest = oldest_held(listed), unsure = listed.pending > 0 }
    end
  end
  local expiring, waiting = {}, {}
  for k, id in ipairs(ids) do
    local done = true
    local score = nil
    if #others > 0 then
      local entry_ms, entry_seq = parse_id(entries[k])
      score = entry_score(entries[k])
      for _, other in ipairs(others) do
        if other.unsure or entry_ms > other.last_ms
          or (entry_ms == other.last_ms and entry_seq > other.last_seq)
          or (other.oldest and tonumber(score) >= other.oldest) then
          done = false
          break
        end
      end
    end
    if done then
      expiring[#expiring + 1] = id
    else
      waiting[#waiting + 1] = score
      waiting[#waiting + 1] = id
    end
  end
  expire_traces(expiring, EXPIRES_TEXT)
  call_many('ZADD', waiting_key, waiting)
end

-- The group is done with a message: dead-lettered, or gone from the stream (the step then
-- updates the holds and trims).
local function release(id, entry_id)
  if LEGACY_PENDING then
    redis.call('XACK', stream_key, group, entry_id)
  end
  redis.call('HDEL', leases_key, id)
  redis.call('ZREM', ends_key, id)
  redis.call('ZREM', held_key, id)
  finish({ id }, { entry_id })
end

local function dead_letter(id, entry_id, fields, attempts, reason)
  redis.call('RPUSH', dead_key, cjson.encode({ id = id, entry = entry_id, body = fields.body,
    attempts = attempts, reason = reason, published_at = fields.published_at, dead_at = NOW }))
  trace(id, 'dead-lettered', 'group', group, 'reason', reason)
  dead_count = dead_count + 1
  release(id, entry_id)
end

-- A receive call's deliveries are leased and held together (channel.lua, ``leave_call``): the
-- lease ends set and the held set each have one member for the call (the end of its leases,
-- the oldest entry it delivered). A message leaves its call when it is acknowledged, nacked (it
-- then gets members of its own), dead-lettered or delivered again; the call's members go with
-- its last message. A receive takes apart the calls whose leases ended (``reclaim_call``). A
-- lease whose call has no record (one of an earlier layout, or whose call was taken apart
-- while it stayed leased) has members of its own, as every lease had before.
use_calls(KEYS[11], { ends_key, held_key })

local function lease_of(id)
  local raw = redis.call('HGET', leases_key, id)
  if not raw then
    return nil
  end
  local lease = {}
  lease.e, lease.r, lease.c, lease.n, lease.k, lease.w = decode_lease(raw)
  return lease
end

if op == 'receive' then
  -- ARGV[5..7]: consumer, how many at most, this call's nonce. KEYS[12]: this call's receive
  -- marker (the ids it leased, for a re-send). Answers the deliveries in a row, six values
  -- each: id, body, delivery count, receipt, published at, lease end.
  local consumer, max, nonce = ARGV[5], tonumber(ARGV[6]), ARGV[7]
  local marker = KEYS[12]
  local out = {}
  local previous = redis.call('GET', marker)
  if previous then
    -- A re-sent call: answer the messages the first one leased, while those leases hold.
    for _, id in ipairs(marked_ids(previous)) do
      local lease = lease_of(id)
      if lease and string.sub(lease.r, 1, #nonce + 1) == nonce .. '.' then
        local fields = entry_fields(lease.e)
        local ends = redis.call('ZSCORE', ends_key, CALL .. nonce)
          or redis.call('ZSCORE', ends_key, id)
        append(out, id, fields.body, lease.n, lease.r, fields.published_at, tonumber(ends))
      end
    end
    return { 1, out, dead_count }
  end
  local lease_until = NOW + cfg.visibility
  local lease_text = int(lease_until)
  local ids = {}
  local released = false
  -- What the deliveries write, written once for all of them at the end; the oldest entry
  -- this call delivers again (the new ones come after it).
  local leases = {}
  local oldest_again = nil
  local function deliver(id, entry_id, body, published_at, count)
    local receipt = nonce .. '.' .. count_text(#ids + 1)
    leases[#leases + 1] = id
    leases[#leases + 1] = cmsgpack.pack(entry_id, receipt, consumer, count, nil, NOW)
    append(out, id, body, count, receipt, published_at, lease_until)
    ids[#ids + 1] = id
  end
  -- A lease that ended: deliver the message again, or dead-letter it after its last delivery.
  local function reclaim_lease(id, lease)
    if not lease.k then
      append_trace(id, owed_delivery(lease.c, lease.n, lease.w)
        .. event_line('expired', 'group', group, 'consumer', lease.c, 'attempt', lease.n))
    end
    local fields = entry_fields(lease.e)
    if not fields then
      -- Deleted from the stream by hand: nothing left to deliver.
      release(id, lease.e)
      released = true
    elseif lease.n >= cfg.max then
      local why = lease.k and 'nacked' or 'lease expired'
      dead_letter(id, lease.e, fields, lease.n,
        why .. ' on delivery ' .. lease.n .. ' of ' .. cfg.max)
      released = true
    else
      if oldest_again == nil or id_less(lease.e, oldest_again) then
        oldest_again = lease.e
      end
      deliver(id, lease.e, fields.body, fields.published_at, lease.n + 1)
    end
  end
  -- A lease of its own that ended (a nacked message's, or an earlier version's).
  local function reclaim(id)
    local lease = lease_of(id)
    redis.call('ZREM', ends_key, id)
    redis.call('ZREM', held_key, id)
    if lease then
      reclaim_lease(id, lease)
    end
  end
  -- A call whose leases ended: what it still leases is delivered again, as far as this receive
  -- has room; the rest get members of their own, for a later receive.
  local function reclaim_call(call_nonce)
    local listed, ends_at = take_call(call_nonce)
    local prefix = call_nonce .. '.'
    for _, id in ipairs(listed) do
      local lease = lease_of(id)
      if lease and not lease.k and sub(lease.r, 1, #prefix) == prefix then
        if #ids < max then
          reclaim_lease(id, lease)
        else
          redis.call('ZADD', ends_key, ends_at, id)
          redis.call('ZADD', held_key, entry_score(lease.e), id)
        end
      end
    end
  end
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', ends_key, '-inf', NOW, 'LIMIT', 0, max)) do
    if #ids >= max then
      break
    end
    if string.byte(member, 1) == 64 then -- '@': a call
      reclaim_call(sub(member, 2))
    else
      reclaim(member)
    end
  end
  local oldest = oldest_again
  if #ids < max then
    local reply = redis.call('XREADGROUP', 'GROUP', group, LEASE_OWNER, 'COUNT', max - #ids,
      'NOACK', 'STREAMS', stream_key, '>')
    if reply then
      for _, entry in ipairs(reply[1][2]) do
        local flat = entry[2]
        if oldest == nil then
          oldest = entry[1]
        end
        if flat[1] == 'id' and flat[3] == 'body' and flat[5] == 'published_at' and not flat[7] then
          -- As publish wrote them (entry_map, without a table per entry).
          deliver(flat[2], entry[1], flat[4], flat[6], 1)
        else
          local fields = entry_map(flat)
          deliver(fields.id, entry[1], fields.body, fields.published_at, 1)
        end
      end
    end
  end
  if #ids > 0 then
    local listed = table.concat(ids, ' ')
    call_many('HSET', leases_key, leases)
    open_call(nonce, ids, listed, { lease_text, entry_score(oldest) })
    redis.call('SET', marker, listed, 'PX', cfg.visibility)
  end
  if #ids > 0 or released then
    update_holds()
  end
  if released then
    trim()
  end
  return { 1, out, dead_count }
end

-- The lease ``receipt`` holds on message ``id``, or a status when it holds none.
local function check_lease(id, receipt, event)
  local lease = lease_of(id)
  if lease and not lease.k and lease.r == receipt then
    return lease, nil
  end
  if already(id, event, receipt, group) then
    return nil, 0
  end
  if not lease and not traced(id) then
    return nil, NOT_FOUND
  end
  return nil, WRONG_RECEIPT
end

if op == 'ack' then
  -- ARGV[5]: how many due traces to sweep besides; ARGV[6..]: id, receipt pairs; a status per
  -- pair, as for queues.
  local out = {}
  local ids, receipts = {}, {}
  for i = 6, #ARGV, 2 do
    ids[#ids + 1] = ARGV[i]
    receipts[#receipts + 1] = ARGV[i + 1]
  end
  local raw_leases = call_many('HMGET', leases_key, ids)
  -- The messages this call acknowledged, by id: the receipt it took (a pair repeated in the
  -- call answers as a repeated ack).
  local took = {}
  local done, entries, lines = {}, {}, {}
  -- The calls these messages leave.
  local calls = leaving_calls()
  for k, id in ipairs(ids) do
    local receipt, status = receipts[k], nil
    if took[id] then
      status = took[id] == receipt and 0 or WRONG_RECEIPT
    else
      local entry_id, held, consumer, count, nacked, delivered_at
      if raw_leases[k] then
        entry_id, held, consumer, count, nacked, delivered_at = decode_lease(raw_leases[k])
      end
      if held == receipt and not nacked then
        took[id] = receipt
        done[#done + 1] = id
        entries[#entries + 1] = entry_id
        calls.add(receipt, id)
        lines[#lines + 1] = acked_line(consumer, count, receipt, delivered_at)
        status = 1
      elseif already(id, 'acked', receipt, group) then
        status = 0
      elseif not raw_leases[k] and not traced(id) then
        status = NOT_FOUND
      else
        status = WRONG_RECEIPT
      end
    end
    out[#out + 1] = status
  end
  local acked = #done
  if acked > 0 then
    trace_many(done, lines)
    -- As release() does, for all of them.
    if LEGACY_PENDING then
      for start = 1, #entries, CHUNK do
        redis.call('XACK', stream_key, group,
          unpack(entries, start, math.min(start + CHUNK - 1, #entries)))
      end
    end
    call_many('HDEL', leases_key, done)
    -- Leases of a call without a record have members of their own.
    calls.leave(function(own)
      call_many('ZREM', ends_key, own)
      call_many('ZREM', held_key, own)
    end)
    update_holds()
    finish(done, entries)
    trim()
  end
  sweep(tonumber(ARGV[5]) + acked)
  return { 1, out }
end

if op == 'nack' then
  -- ARGV[5..7]: id, receipt, delay (ms). The lease ends after the delay; the next receive
  -- delivers the message again, or dead-letters it after its last delivery.
  local id, receipt, delay = ARGV[5], ARGV[6], tonumber(ARGV[7])
  local lease, status = check_lease(id, receipt, 'nacked')
  if not lease then
    return { 1, status }
  end
  append_trace(id, owed_delivery(lease.c, lease.n, lease.w) .. event_line('nacked', 'group',
    group, 'consumer', lease.c, 'attempt', lease.n, 'r', receipt, 'delay_ms',
    delay > 0 and delay or nil))
  redis.call('HSET', leases_key, id, cmsgpack.pack(lease.e, '', lease.c, lease.n, true))
  redis.call('ZADD', ends_key, NOW + delay, id)
  local nonce = nonce_of(receipt)
  if nonce and leave_call(nonce, 1) then
    -- Out of its call, the message holds its entry with a member of its own.
    redis.call('ZADD', held_key, entry_score(lease.e), id)
    update_holds()
  end
  return { 1, 1 }
end

if op == 'dead_letters' then
  -- ARGV[5..6]: first and last index.
  return { 1, redis.call('LRANGE', dead_key, ARGV[5], ARGV[6]), redis.call('LLEN', dead_key) }
end

return redis.error_reply('unknown topic step: ' .. tostring(op))
