-- Every step on a topic, as one script: ARGV[1] names the step.
-- KEYS: config (hash), stream (entries: id, body, published_at; the consumer groups and their
-- pending lists live inside it). ARGV[2..5]: the topic's name, the trace key prefix, the trace
-- retention (s), the topic's key prefix (dead-letter lists, dedupe and nack markers are built
-- from it, in the topic's slot; see keys.py); the step's own arguments follow.
-- A group's lease on an entry is its pending-list row: the consumer that holds it, the delivery
-- count, the time since delivery. A lease has ended when that time passes the visibility
-- timeout. A receipt names the entry, the delivery count and the consumer, so a receipt from an
-- earlier delivery no longer matches.
local config_key, stream_key = KEYS[1], KEYS[2]
local op, topic, trace_prefix, retention, prefix =
  ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]

local clock = redis.call('TIME')
local NOW = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)

local NOT_FOUND, WRONG_RECEIPT, GROUP_NOT_FOUND, DELAY_TOO_LONG = -1, -2, -5, -6

local function ms(number)
  return string.format('%.0f', number)
end

local function trace(id, event, fields)
  fields.event = event
  fields.at = NOW
  fields.topic = topic
  local key = trace_prefix .. id
  redis.call('RPUSH', key, cjson.encode(fields))
  redis.call('EXPIRE', key, retention)
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

-- Drop the entries every group has acknowledged: those before the oldest entry any group still
-- has pending or not yet delivered. A group's undelivered entries start after its
-- last-delivered id; its pending ones at the first id of its pending list. Never by length or
-- age, so an entry a group has not acknowledged stays. A topic without groups keeps everything.
local function trim()
  local keep = nil
  for _, raw in ipairs(redis.call('XINFO', 'GROUPS', stream_key)) do
    local group = as_map(raw)
    local first
    if group.pending > 0 then
      first = redis.call('XPENDING', stream_key, group.name)[2]
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
local cfg = { visibility = tonumber(c[1]), max = tonumber(c[2]), created_at = c[3] }

if op == 'config' then
  local groups = {}
  local listed = {}
  if redis.call('EXISTS', stream_key) == 1 then
    listed = redis.call('XINFO', 'GROUPS', stream_key)
  end
  for _, raw in ipairs(listed) do
    local group = as_map(raw)
    groups[#groups + 1] = { group.name, group.pending, group.lag or -1,
      redis.call('LLEN', prefix .. 'dead:' .. group.name) }
  end
  return { 1, c[1], c[2], c[3], redis.call('XLEN', stream_key), groups }
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
    if first then
      out[#out + 1] = { first, 0 }
    elseif redis.call('EXISTS', trace_prefix .. id) == 1 then
      out[#out + 1] = { id, 0 }
    else
      local entry = redis.call('XADD', stream_key, '*', 'id', id, 'body', body,
        'published_at', ms(NOW))
      trace(id, 'published', { entry = entry })
      out[#out + 1] = { id, 1 }
    end
  end
  return { 1, out }
end

-- Every remaining step names a group.
local group = ARGV[6]
local dead_key = prefix .. 'dead:' .. group
local nacked_key = prefix .. 'nacked:' .. group
local summary = redis.pcall('XPENDING', stream_key, group)
if type(summary) == 'table' and summary.err then
  return { GROUP_NOT_FOUND }
end

local function dead_letter(entry_id, fields, attempts, reason)
  redis.call('RPUSH', dead_key, cjson.encode({ id = fields.id, entry = entry_id,
    body = fields.body, attempts = attempts, reason = reason,
    published_at = fields.published_at, dead_at = NOW }))
  redis.call('XACK', stream_key, group, entry_id)
  trace(fields.id, 'dead-lettered', { group = group, reason = reason })
end

local function entry_fields(entry_id)
  local entry = redis.call('XRANGE', stream_key, entry_id, entry_id)[1]
  if not entry then
    return nil
  end
  return as_map(entry[2])
end

if op == 'receive' then
  -- ARGV[7..8]: consumer, how many at most.
  local consumer, max = ARGV[7], tonumber(ARGV[8])
  local lease_until = ms(NOW + cfg.visibility)
  local out = {}
  local function deliver(entry_id, fields, attempt)
    trace(fields.id, 'delivered', { group = group, consumer = consumer, attempt = attempt })
    out[#out + 1] = { fields.id, fields.body, attempt,
      entry_id .. '|' .. attempt .. '|' .. consumer, fields.published_at, lease_until }
  end
  if summary[1] > 0 then
    local stale = redis.call('XPENDING', stream_key, group, 'IDLE', cfg.visibility, '-', '+', max)
    for _, row in ipairs(stale) do
      local entry_id, owner, count = row[1], row[2], row[4]
      local fields = entry_fields(entry_id)
      if not fields then
        -- Gone from the stream (deleted by hand): nothing to deliver.
        redis.call('XACK', stream_key, group, entry_id)
      else
        if redis.call('HDEL', nacked_key, entry_id) == 0 then
          trace(fields.id, 'expired', { group = group, consumer = owner, attempt = count })
        end
        if count >= cfg.max then
          dead_letter(entry_id, fields, count,
            'lease expired on delivery ' .. count .. ' of ' .. cfg.max)
        else
          redis.call('XCLAIM', stream_key, group, consumer, cfg.visibility, entry_id)
          deliver(entry_id, fields, count + 1)
        end
      end
    end
  end
  if #out < max then
    local reply = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', max - #out,
      'STREAMS', stream_key, '>')
    if reply then
      for _, entry in ipairs(reply[1][2]) do
        deliver(entry[1], as_map(entry[2]), 1)
      end
    end
  end
  return { 1, out }
end

-- The pending row a receipt names, when it still holds the lease of message ``id``.
local function check_lease(id, receipt, event)
  local entry_id, count, owner = string.match(receipt, '^([0-9]+%-[0-9]+)|([0-9]+)|(.+)$')
  if entry_id then
    local row = redis.call('XPENDING', stream_key, group, entry_id, entry_id, 1)[1]
    -- A nacked lease is over, though its row stays until the next receive takes it.
    if row and row[2] == owner and row[4] == tonumber(count)
        and redis.call('HEXISTS', nacked_key, entry_id) == 0 then
      local fields = entry_fields(entry_id)
      if fields and fields.id == id then
        return { entry_id = entry_id, owner = owner, count = row[4], fields = fields }, nil
      end
    end
  end
  if already(id, event, group, receipt) then
    return nil, 0
  end
  if redis.call('EXISTS', trace_prefix .. id) == 0 then
    return nil, NOT_FOUND
  end
  return nil, WRONG_RECEIPT
end

if op == 'ack' then
  -- ARGV[7..]: id, receipt pairs; a status per pair, as for queues.
  local out = {}
  for i = 7, #ARGV, 2 do
    local id, receipt = ARGV[i], ARGV[i + 1]
    local lease, status = check_lease(id, receipt, 'acked')
    if lease then
      redis.call('XACK', stream_key, group, lease.entry_id)
      trace(id, 'acked', { group = group, consumer = lease.owner, attempt = lease.count,
        r = receipt })
      status = 1
    end
    out[#out + 1] = status
  end
  trim()
  return { 1, out }
end

if op == 'nack' then
  -- ARGV[7..9]: id, receipt, delay (ms; at most the visibility timeout: the lease's clock is
  -- the pending row's idle time, set here so that it ends after the delay).
  local id, receipt, delay = ARGV[7], ARGV[8], tonumber(ARGV[9])
  if delay > cfg.visibility then
    return { DELAY_TOO_LONG, cfg.visibility }
  end
  local lease, status = check_lease(id, receipt, 'nacked')
  if not lease then
    return { 1, status }
  end
  local fields = { group = group, consumer = lease.owner, attempt = lease.count, r = receipt }
  if delay > 0 then
    fields.delay_ms = delay
  end
  trace(id, 'nacked', fields)
  if lease.count >= cfg.max then
    dead_letter(lease.entry_id, lease.fields, lease.count,
      'nacked on delivery ' .. lease.count .. ' of ' .. cfg.max)
    trim()
  else
    redis.call('XCLAIM', stream_key, group, lease.owner, 0, lease.entry_id,
      'IDLE', cfg.visibility - delay, 'JUSTID')
    redis.call('HSET', nacked_key, lease.entry_id, 1)
  end
  return { 1, 1 }
end

if op == 'dead_letters' then
  -- ARGV[7..8]: offset, count.
  local start = tonumber(ARGV[7])
  return { 1, redis.call('LRANGE', dead_key, start, start + tonumber(ARGV[8]) - 1),
    redis.call('LLEN', dead_key) }
end

return redis.error_reply('unknown topic step: ' .. tostring(op))
