-- Every step on a topic, as one script: ARGV[1] names the step.
-- KEYS (every key the script touches is declared, all in the topic's slot; see keys.py):
--   1 config (hash), 2 stream (entries: id, body, published_at; the consumer groups and their
--   pending lists live inside it), 3 traces (hash: message id -> its events, one JSON object
--   per line), 4 trace expiry (sorted set: message id -> when its trace goes, ms); a step that
--   names a group adds 5 the group's leases, 6 their ends and 7 its dead letters; then the
--   step's markers (de-duplication, receive), which the caller names.
-- ARGV[2..3]: the topic's name, the trace retention (s); the step's own arguments follow.
--
-- Leases are kept by the scripts, not by the stream's pending list: per group, a hash of the
-- messages it has leased (message id -> entry id, receipt, consumer, delivery count, nacked) and
-- a sorted set of when each lease ends. An entry stays in the group's pending list, under one
-- consumer name (LEASE_OWNER), from its first delivery until it is acknowledged or
-- dead-lettered, so trimming (which looks at pending lists) never drops it. A lease's end is
-- fixed when it is granted, so changing the topic's visibility timeout later does not shorten
-- leases already held, and receipts are random per delivery.
local config_key, stream_key, traces_key, expiry_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local op, topic, retention = ARGV[1], ARGV[2], tonumber(ARGV[3])

local clock = redis.call('TIME')
local NOW = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)

local NOT_FOUND, WRONG_RECEIPT, GROUP_NOT_FOUND = -1, -2, -5
local LEASE_OWNER = 'leases'

-- Messages this call dead-lettered: a receive answers it last, for the metrics.
local dead_count = 0

local function ms(number)
  return string.format('%.0f', number)
end

-- A trace lives until every group is done with its message (see finished), then ``retention``
-- seconds more: the trace expiry set says when, and the publish and ack steps sweep the due
-- ones (``sweep``).
local function trace(id, event, fields)
  fields.event = event
  fields.at = NOW
  fields.topic = topic
  local line = cjson.encode(fields)
  local old = redis.call('HGET', traces_key, id)
  redis.call('HSET', traces_key, id, old and (old .. '\n' .. line) or line)
end

local function traced(id)
  return redis.call('HEXISTS', traces_key, id) == 1
end

-- Batches, as in queue.lua: ``call_many`` runs ``command key args...`` in calls of at most
-- CHUNK arguments and gathers the replies of those that answer lists.
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

local function trace_line(event, fields)
  fields.event = event
  fields.at = NOW
  fields.topic = topic
  return cjson.encode(fields)
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

local function already(id, event, group, receipt)
  local raw = redis.call('HGET', traces_key, id)
  if not raw then
    return false
  end
  for line in string.gmatch(raw, '[^\n]+') do
    local seen = cjson.decode(line)
    if seen.event == event and seen.group == group and seen.r == receipt then
      return true
    end
  end
  return false
end

local function expire_trace(id)
  redis.call('ZADD', expiry_key, NOW + retention * 1000, id)
end

local function sweep(limit)
  local due = redis.call('ZRANGEBYSCORE', expiry_key, '-inf', NOW, 'LIMIT', 0, limit)
  if #due > 0 then
    redis.call('HDEL', traces_key, unpack(due))
    redis.call('ZREM', expiry_key, unpack(due))
  end
end

local function as_map(flat)
  local map = {}
  for i = 1, #flat, 2 do
    map[flat[i]] = flat[i + 1]
  end
  return map
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

-- Whether an entry still waits for some group: pending there, or not yet delivered to it
-- (``done_group``, one that has just acknowledged it, is not asked).
local function awaited(entry_id, done_group)
  for _, group in ipairs(groups()) do
    if group.name ~= done_group then
      if id_less(group['last-delivered-id'], entry_id) then
        return true
      end
      if #redis.call('XPENDING', stream_key, group.name, entry_id, entry_id, 1) > 0 then
        return true
      end
    end
  end
  return false
end

-- The last group is done with a message: its trace now expires after the retention.
local function finished(id, entry_id)
  if not awaited(entry_id) then
    expire_trace(id)
  end
end

-- Drop the entries every group is done with: those before the oldest entry that any group
-- still has pending or not yet delivered. Never by length or age, so an entry a group has not
-- acknowledged stays. A topic without groups keeps everything. Runs after a step that
-- acknowledged something, so what it removes is bounded by how far that step moved the oldest
-- pending entry.
local function trim()
  local keep = nil
  for _, group in ipairs(groups()) do
    local first
    local pending = redis.call('XPENDING', stream_key, group.name)
    if pending[1] > 0 then
      first = pending[2]
    else
      local last_ms, last_seq = parse_id(group['last-delivered-id'])
      first = ms(last_ms) .. '-' .. ms(last_seq + 1)
    end
    if keep == nil or id_less(first, keep) then
      keep = first
    end
  end
  if keep then
    redis.call('XTRIM', stream_key, 'MINID', keep)
  end
end

if op == 'create' then
  local existed = redis.call('EXISTS', config_key) == 1
  redis.call('HSET', config_key, 'visibility_timeout_ms', ARGV[4], 'max_deliveries', ARGV[5])
  if existed then
    return { 0 }
  end
  redis.call('HSET', config_key, 'created_at', ms(NOW))
  return { 1 }
end

local c = redis.call('HMGET', config_key, 'visibility_timeout_ms', 'max_deliveries', 'created_at')
if not c[1] then
  return { NOT_FOUND }
end
local cfg = { visibility = tonumber(c[1]), max = tonumber(c[2]) }

if op == 'config' then
  -- ARGV[4..]: the groups the caller found; KEYS[5..]: each one's leases, lease ends and dead
  -- letters, in that order. A group gone since is left out; one created since is not listed.
  local current = {}
  for _, group in ipairs(groups()) do
    current[group.name] = group
  end
  local listed = {}
  for i = 4, #ARGV do
    local group = current[ARGV[i]]
    if group then
      local base = 5 + (i - 4) * 3
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
        'published_at', ms(NOW))
      traces[#traces + 1] = id
      traces[#traces + 1] = trace_line('published', { entry = entry })
      if no_group then
        -- No group to wait for: the entry stays (a group created later from the earliest
        -- gets it), but the trace ages out.
        expiring[#expiring + 1] = NOW + retention * 1000
        expiring[#expiring + 1] = id
      end
      out[#out + 1] = { id, 1 }
    end
  end
  call_many('HSET', traces_key, traces)
  call_many('ZADD', expiry_key, expiring)
  sweep(tonumber(ARGV[5]))
  return { 1, out }
end

-- Every remaining step names a group.
local group = ARGV[4]
local leases_key, ends_key, dead_key = KEYS[5], KEYS[6], KEYS[7]
local found = false
for _, listed in ipairs(groups()) do
  if listed.name == group then
    found = true
  end
end
if not found then
  return { GROUP_NOT_FOUND }
end

local function entry_fields(entry_id)
  local entry = redis.call('XRANGE', stream_key, entry_id, entry_id)[1]
  if not entry then
    return nil
  end
  return as_map(entry[2])
end

-- The group is done with a message: acknowledged, dead-lettered, or gone from the stream.
local function release(id, entry_id)
  redis.call('XACK', stream_key, group, entry_id)
  redis.call('HDEL', leases_key, id)
  redis.call('ZREM', ends_key, id)
  finished(id, entry_id)
end

local function dead_letter(id, entry_id, fields, attempts, reason)
  redis.call('RPUSH', dead_key, cjson.encode({ id = id, entry = entry_id, body = fields.body,
    attempts = attempts, reason = reason, published_at = fields.published_at, dead_at = NOW }))
  trace(id, 'dead-lettered', { group = group, reason = reason })
  dead_count = dead_count + 1
  release(id, entry_id)
end

local function lease_of(id)
  local raw = redis.call('HGET', leases_key, id)
  if not raw then
    return nil
  end
  return cjson.decode(raw)
end

if op == 'receive' then
  -- ARGV[5..7]: consumer, how many at most, this call's nonce. KEYS[8]: this call's receive
  -- marker (the ids it leased, for a re-send).
  local consumer, max, nonce = ARGV[5], tonumber(ARGV[6]), ARGV[7]
  local marker = KEYS[8]
  local out = {}
  local previous = redis.call('GET', marker)
  if previous then
    -- A re-sent call: answer the messages the first one leased, while those leases hold.
    for _, id in ipairs(cjson.decode(previous)) do
      local lease = lease_of(id)
      if lease and string.sub(lease.r, 1, #nonce + 1) == nonce .. '.' then
        local fields = entry_fields(lease.e)
        out[#out + 1] = { id, fields.body, lease.n, lease.r, fields.published_at,
          ms(tonumber(redis.call('ZSCORE', ends_key, id))) }
      end
    end
    return { 1, out, dead_count }
  end
  local lease_until = NOW + cfg.visibility
  local ids = {}
  local released = false
  -- What the deliveries write, written once for all of them at the end.
  local leases, ends, lines = {}, {}, {}
  local function deliver(id, entry_id, fields, count)
    local receipt = nonce .. '.' .. (#out + 1)
    leases[#leases + 1] = id
    leases[#leases + 1] = cjson.encode({ e = entry_id, r = receipt, c = consumer, n = count })
    ends[#ends + 1] = lease_until
    ends[#ends + 1] = id
    lines[#lines + 1] = trace_line('delivered', { group = group, consumer = consumer,
      attempt = count })
    out[#out + 1] = { id, fields.body, count, receipt, fields.published_at, ms(lease_until) }
    ids[#ids + 1] = id
  end
  -- A lease that ended: deliver the message again, or dead-letter it after its last delivery.
  local function reclaim(id)
    local lease = lease_of(id)
    if not lease then
      redis.call('ZREM', ends_key, id)
      return
    end
    if not lease.k then
      trace(id, 'expired', { group = group, consumer = lease.c, attempt = lease.n })
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
      deliver(id, lease.e, fields, lease.n + 1)
    end
  end
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', ends_key, '-inf', NOW, 'LIMIT', 0, max)) do
    reclaim(id)
  end
  if #out < max then
    local reply = redis.call('XREADGROUP', 'GROUP', group, LEASE_OWNER, 'COUNT', max - #out,
      'STREAMS', stream_key, '>')
    if reply then
      for _, entry in ipairs(reply[1][2]) do
        local fields = as_map(entry[2])
        deliver(fields.id, entry[1], fields, 1)
      end
    end
  end
  if #ids > 0 then
    call_many('HSET', leases_key, leases)
    call_many('ZADD', ends_key, ends)
    trace_many(ids, lines)
    redis.call('SET', marker, cjson.encode(ids), 'PX', cfg.visibility)
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
  if already(id, event, group, receipt) then
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
  for k, id in ipairs(ids) do
    local receipt, status = receipts[k], nil
    if took[id] then
      status = took[id] == receipt and 0 or WRONG_RECEIPT
    else
      local lease = raw_leases[k] and cjson.decode(raw_leases[k])
      if lease and not lease.k and lease.r == receipt then
        took[id] = receipt
        done[#done + 1] = id
        entries[#entries + 1] = lease.e
        lines[#lines + 1] = trace_line('acked', { group = group, consumer = lease.c,
          attempt = lease.n, r = receipt })
        status = 1
      elseif already(id, 'acked', group, receipt) then
        status = 0
      elseif not lease and not traced(id) then
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
    for start = 1, #entries, CHUNK do
      redis.call('XACK', stream_key, group,
        unpack(entries, start, math.min(start + CHUNK - 1, #entries)))
    end
    call_many('HDEL', leases_key, done)
    call_many('ZREM', ends_key, done)
    local expiring = {}
    for k, id in ipairs(done) do
      if not awaited(entries[k], group) then
        expiring[#expiring + 1] = NOW + retention * 1000
        expiring[#expiring + 1] = id
      end
    end
    call_many('ZADD', expiry_key, expiring)
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
  local fields = { group = group, consumer = lease.c, attempt = lease.n, r = receipt }
  if delay > 0 then
    fields.delay_ms = delay
  end
  trace(id, 'nacked', fields)
  lease.k = true
  lease.r = ''
  redis.call('HSET', leases_key, id, cjson.encode(lease))
  redis.call('ZADD', ends_key, NOW + delay, id)
  return { 1, 1 }
end

if op == 'dead_letters' then
  -- ARGV[5..6]: first and last index.
  return { 1, redis.call('LRANGE', dead_key, ARGV[5], ARGV[6]), redis.call('LLEN', dead_key) }
end

return redis.error_reply('unknown topic step: ' .. tostring(op))
