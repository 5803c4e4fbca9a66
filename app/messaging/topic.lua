-- Every step on a topic, as one script: ARGV[1] names the step.
-- KEYS: config (hash), stream (entries: id, body, published_at; the consumer groups and their
-- pending lists live inside it). ARGV[2..5]: the topic's name, the trace key prefix, the trace
-- retention (s), the topic's key prefix (the per-group keys below, dedupe markers and receive
-- markers are built from it, in the topic's slot; see keys.py); the step's own arguments follow.
--
-- Leases are kept by the scripts, not by the stream's pending list: per group, a hash of the
-- messages it has leased (message id -> entry id, receipt, consumer, delivery count, nacked) and
-- a sorted set of when each lease ends. An entry stays in the group's pending list, under one
-- consumer name (LEASE_OWNER), from its first delivery until it is acknowledged or
-- dead-lettered, so trimming (which looks at pending lists) never drops it. A lease's end is
-- fixed when it is granted, so changing the topic's visibility timeout later does not shorten
-- leases already held, and receipts are random per delivery.
local config_key, stream_key = KEYS[1], KEYS[2]
local op, topic, trace_prefix, retention, prefix =
  ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]

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
-- seconds more.
local function trace(id, event, fields)
  fields.event = event
  fields.at = NOW
  fields.topic = topic
  redis.call('RPUSH', trace_prefix .. id, cjson.encode(fields))
end

local function already(id, event, group, receipt)
  for _, raw in ipairs(redis.call('LRANGE', trace_prefix .. id, 0, -1)) do
    local seen = cjson.decode(raw)
    if seen.event == event and seen.group == group and seen.r == receipt then
      return true
    end
  end
  return false
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

-- Whether an entry still waits for some group: pending there, or not yet delivered to it.
local function awaited(entry_id)
  for _, group in ipairs(groups()) do
    if id_less(group['last-delivered-id'], entry_id) then
      return true
    end
    if #redis.call('XPENDING', stream_key, group.name, entry_id, entry_id, 1) > 0 then
      return true
    end
  end
  return false
end

-- The last group is done with a message: its trace now expires after the retention.
local function finished(id, entry_id)
  if not awaited(entry_id) then
    redis.call('EXPIRE', trace_prefix .. id, retention)
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
  redis.call('HSET', config_key, 'visibility_timeout_ms', ARGV[6], 'max_deliveries', ARGV[7])
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
  local listed = {}
  for _, group in ipairs(groups()) do
    listed[#listed + 1] = { group.name, redis.call('HLEN', prefix .. 'leases:' .. group.name),
      group.lag or -1, redis.call('LLEN', prefix .. 'dead:' .. group.name) }
  end
  return { 1, c[1], c[2], c[3], redis.call('XLEN', stream_key), listed }
end

if op == 'create_group' then
  local reply = redis.pcall('XGROUP', 'CREATE', stream_key, ARGV[6], ARGV[7], 'MKSTREAM')
  if type(reply) == 'table' and reply.err then
    if string.find(reply.err, 'BUSYGROUP', 1, true) then
      return { 1, 0 }
    end
    return redis.error_reply(reply.err)
  end
  return { 1, 1 }
end

if op == 'publish' then
  -- ARGV[6]: de-duplication window (ms); then per message: id, body, dedupe id ('' for none).
  -- Answers each message's id and whether this call published it (a re-sent call, redis-py's
  -- after a lost reply, finds its own message and answers the same).
  local window = ARGV[6]
  local out = {}
  for i = 7, #ARGV, 3 do
    local id, body, dedupe = ARGV[i], ARGV[i + 1], ARGV[i + 2]
    local first = nil
    if dedupe ~= '' then
      local marker = prefix .. 'dedupe:' .. dedupe
      first = redis.call('GET', marker)
      if not first then
        redis.call('SET', marker, id, 'PX', window)
      end
    end
    if first and first ~= id then
      out[#out + 1] = { first, 0 }
    elseif redis.call('EXISTS', trace_prefix .. id) == 1 then
      out[#out + 1] = { id, 1 }
    else
      local entry = redis.call('XADD', stream_key, '*', 'id', id, 'body', body,
        'published_at', ms(NOW))
      trace(id, 'published', { entry = entry })
      if #groups() == 0 then
        -- No group to wait for: the entry stays (a group created later from the earliest
        -- gets it), but the trace ages out.
        redis.call('EXPIRE', trace_prefix .. id, retention)
      end
      out[#out + 1] = { id, 1 }
    end
  end
  return { 1, out }
end

-- Every remaining step names a group.
local group = ARGV[6]
local leases_key = prefix .. 'leases:' .. group
local ends_key = prefix .. 'lease-ends:' .. group
local dead_key = prefix .. 'dead:' .. group
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
  -- ARGV[7..9]: consumer, how many at most, this call's nonce.
  local consumer, max, nonce = ARGV[7], tonumber(ARGV[8]), ARGV[9]
  local marker = prefix .. 'receive:' .. group .. ':' .. nonce
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
  local function deliver(id, entry_id, fields, count)
    local receipt = nonce .. '.' .. (#out + 1)
    redis.call('HSET', leases_key, id,
      cjson.encode({ e = entry_id, r = receipt, c = consumer, n = count }))
    redis.call('ZADD', ends_key, lease_until, id)
    trace(id, 'delivered', { group = group, consumer = consumer, attempt = count })
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
  if not lease and redis.call('EXISTS', trace_prefix .. id) == 0 then
    return nil, NOT_FOUND
  end
  return nil, WRONG_RECEIPT
end

if op == 'ack' then
  -- ARGV[7..]: id, receipt pairs; a status per pair, as for queues.
  local out = {}
  local acked = false
  for i = 7, #ARGV, 2 do
    local id, receipt = ARGV[i], ARGV[i + 1]
    local lease, status = check_lease(id, receipt, 'acked')
    if lease then
      trace(id, 'acked', { group = group, consumer = lease.c, attempt = lease.n, r = receipt })
      release(id, lease.e)
      acked = true
      status = 1
    end
    out[#out + 1] = status
  end
  if acked then
    trim()
  end
  return { 1, out }
end

if op == 'nack' then
  -- ARGV[7..9]: id, receipt, delay (ms). The lease ends after the delay; the next receive
  -- delivers the message again, or dead-letters it after its last delivery.
  local id, receipt, delay = ARGV[7], ARGV[8], tonumber(ARGV[9])
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
  -- ARGV[7..8]: first and last index.
  return { 1, redis.call('LRANGE', dead_key, ARGV[7], ARGV[8]), redis.call('LLEN', dead_key) }
end

return redis.error_reply('unknown topic step: ' .. tostring(op))
