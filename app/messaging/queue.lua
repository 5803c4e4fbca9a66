-- Every step on a queue, as one script: ARGV[1] names the step.
-- KEYS: config (hash), ready (list for fifo, sorted set for priority), delayed (sorted set:
-- visible-at ms), inflight (sorted set: lease-until ms), dead (list of ids). ARGV[2..5]: the
-- queue's name, the trace key prefix, the trace retention (s), the queue's key prefix; the
-- step's own arguments follow. Every key touched is in the queue's slot (see keys.py); the
-- per-message keys are built from the prefix.
-- Time is the server's (TIME), read once per call, so leases and delays do not depend on the
-- clocks of the API processes.
local config_key, ready_key, delayed_key, inflight_key, dead_key =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local op, queue, trace_prefix, retention, prefix =
  ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]

local clock = redis.call('TIME')
local NOW = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)

local NOT_FOUND, WRONG_RECEIPT, CONFLICT, PRIORITY_ON_FIFO = -1, -2, -3, -4

-- What this call's housekeeping and releases did: leases that expired and messages
-- dead-lettered. The steps that may do either answer it last (``swept()``), for the metrics.
local expired_count, dead_count = 0, 0

local function swept()
  return { expired_count, dead_count }
end

local function ms(number)
  return string.format('%.0f', number)
end

local function msg_key(id)
  return prefix .. 'msg:' .. id
end

-- A trace lives as long as its message, then ``retention`` seconds from its ack (the only step
-- that removes a message), so it needs one EXPIRE, not one per event.
local function trace(id, event, fields)
  fields.event = event
  fields.at = NOW
  fields.queue = queue
  redis.call('RPUSH', trace_prefix .. id, cjson.encode(fields))
end

-- Whether the trace holds ``event`` carrying this receipt: the step already ran, and this call
-- is a re-send of it. (A trace is short: a few events per delivery, at most 100 deliveries.)
local function already(id, event, receipt)
  for _, raw in ipairs(redis.call('LRANGE', trace_prefix .. id, 0, -1)) do
    local seen = cjson.decode(raw)
    if seen.event == event and seen.r == receipt then
      return true
    end
  end
  return false
end

local function load_config()
  local c = redis.call('HMGET', config_key, 'kind', 'visibility_timeout_ms', 'max_deliveries')
  if not c[1] then
    return nil
  end
  return { kind = c[1], visibility = tonumber(c[2]), max = tonumber(c[3]) }
end

-- Put a message in line. A redelivery goes to the head of a fifo queue (it was first in line
-- before); a priority queue orders by priority, then by the publish sequence the message keeps.
local function push_ready(cfg, id, front, priority, order)
  if cfg.kind == 'fifo' then
    if front then
      redis.call('LPUSH', ready_key, id)
    else
      redis.call('RPUSH', ready_key, id)
    end
  else
    redis.call('ZADD', ready_key, -tonumber(priority), order .. ':' .. id)
  end
end

-- Make a message that was leased, delayed or dead receivable again (its lease, if it had one,
-- is already cleared: see release).
local function make_ready(cfg, id, front)
  local key = msg_key(id)
  local m = redis.call('HMGET', key, 'priority', 'order')
  push_ready(cfg, id, front, m[1], m[2])
  redis.call('HSET', key, 'state', 'ready')
  redis.call('HDEL', key, 'visible_at')
end

local function pop_ready(cfg, count)
  if count <= 0 then
    return {}
  end
  if cfg.kind == 'fifo' then
    return redis.call('LPOP', ready_key, count) or {}
  end
  local popped = redis.call('ZPOPMIN', ready_key, count)
  local ids = {}
  for i = 1, #popped, 2 do
    local member = popped[i]
    ids[#ids + 1] = string.sub(member, string.find(member, ':', 1, true) + 1)
  end
  return ids
end

local function dead_letter(id, reason)
  redis.call('HSET', msg_key(id), 'state', 'dead', 'reason', reason, 'dead_at', ms(NOW))
  redis.call('RPUSH', dead_key, id)
  trace(id, 'dead-lettered', { reason = reason })
  dead_count = dead_count + 1
end

-- A lease ended without an ack (expired or nacked): deliver again after ``delay`` ms, or
-- dead-letter the message when it has had all its deliveries.
local function release(cfg, id, delay, why)
  local key = msg_key(id)
  redis.call('HDEL', key, 'receipt', 'consumer', 'lease_until')
  local attempts = tonumber(redis.call('HGET', key, 'attempts'))
  if attempts >= cfg.max then
    dead_letter(id, why .. ' on delivery ' .. attempts .. ' of ' .. cfg.max)
  elseif delay > 0 then
    redis.call('ZADD', delayed_key, NOW + delay, id)
    redis.call('HSET', key, 'state', 'delayed', 'visible_at', ms(NOW + delay))
  else
    make_ready(cfg, id, true)
  end
end

-- Due delayed messages become ready and expired leases end, at most ``limit`` of each per
-- call, so no call runs long; every step that reads the queue's state does this first.
local function housekeep(cfg, limit)
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', delayed_key, '-inf', NOW, 'LIMIT', 0, limit)) do
    redis.call('ZREM', delayed_key, id)
    make_ready(cfg, id, false)
  end
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', inflight_key, '-inf', NOW, 'LIMIT', 0, limit)) do
    redis.call('ZREM', inflight_key, id)
    local m = redis.call('HMGET', msg_key(id), 'consumer', 'attempts')
    trace(id, 'expired', { consumer = m[1], attempt = tonumber(m[2]) })
    expired_count = expired_count + 1
    release(cfg, id, 0, 'lease expired')
  end
end

local function counts(cfg)
  local ready
  if cfg.kind == 'fifo' then
    ready = redis.call('LLEN', ready_key)
  else
    ready = redis.call('ZCARD', ready_key)
  end
  return { ready, redis.call('ZCARD', delayed_key), redis.call('ZCARD', inflight_key),
    redis.call('LLEN', dead_key) }
end

if op == 'create' then
  local kind, visibility, max = ARGV[6], ARGV[7], ARGV[8]
  local existing = redis.call('HGET', config_key, 'kind')
  if existing and existing ~= kind then
    return { CONFLICT, existing }
  end
  redis.call('HSET', config_key, 'kind', kind, 'visibility_timeout_ms', visibility,
    'max_deliveries', max)
  if existing then
    return { 0, kind }
  end
  redis.call('HSET', config_key, 'created_at', ms(NOW), 'seq', 0)
  return { 1, kind }
end

local cfg = load_config()
if not cfg then
  return { NOT_FOUND }
end

if op == 'config' then
  housekeep(cfg, tonumber(ARGV[6]))
  local c = redis.call('HMGET', config_key, 'created_at')
  return { 1, cfg.kind, cfg.visibility, cfg.max, c[1], counts(cfg), swept() }
end

if op == 'publish' then
  -- ARGV[6]: de-duplication window (ms); then per message: id, body, priority, delay (ms),
  -- dedupe id ('' for none). Answers each message's id and whether this call enqueued it.
  local window = ARGV[6]
  if cfg.kind == 'fifo' then
    for i = 9, #ARGV, 5 do
      if ARGV[i] ~= '0' then
        return { PRIORITY_ON_FIFO }
      end
    end
  end
  local out = {}
  -- The publish sequence orders a priority queue's messages within a priority; one counter
  -- update per call, not per message.
  local seq = tonumber(redis.call('HGET', config_key, 'seq') or '0')
  local first_seq = seq
  for i = 7, #ARGV, 5 do
    local id, body, priority, delay, dedupe = ARGV[i], ARGV[i + 1], ARGV[i + 2],
      tonumber(ARGV[i + 3]), ARGV[i + 4]
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
      -- A re-sent call (redis-py after a lost reply): this call published the message.
      out[#out + 1] = { id, 1 }
    else
      seq = seq + 1
      local order = string.format('%016d', seq)
      local fields = { priority = tonumber(priority) }
      redis.call('HSET', msg_key(id), 'body', body, 'priority', priority, 'order', order,
        'attempts', 0, 'published_at', ms(NOW), 'dedupe_id', dedupe, 'state', 'ready')
      if delay > 0 then
        fields.delay_ms = delay
        redis.call('HSET', msg_key(id), 'state', 'delayed', 'visible_at', ms(NOW + delay))
        redis.call('ZADD', delayed_key, NOW + delay, id)
      else
        push_ready(cfg, id, false, priority, order)
      end
      trace(id, 'published', fields)
      out[#out + 1] = { id, 1 }
    end
  end
  if seq ~= first_seq then
    redis.call('HSET', config_key, 'seq', seq)
  end
  return { 1, out }
end

local function leased(id, m, attempt, receipt, lease_until)
  return { id, m[1], attempt, receipt, m[2], m[3], ms(lease_until) }
end

if op == 'receive' then
  -- ARGV[6..9]: consumer, how many at most, this call's nonce, housekeeping limit.
  local consumer, max, nonce, limit = ARGV[6], tonumber(ARGV[7]), ARGV[8], tonumber(ARGV[9])
  local marker = prefix .. 'receive:' .. nonce
  local out = {}
  local previous = redis.call('GET', marker)
  if previous then
    -- A re-sent call: answer the messages the first one leased, while those leases hold.
    for _, id in ipairs(cjson.decode(previous)) do
      local m = redis.call('HMGET', msg_key(id), 'body', 'priority', 'published_at', 'attempts',
        'receipt', 'lease_until')
      if m[5] and string.sub(m[5], 1, #nonce + 1) == nonce .. '.' then
        out[#out + 1] = leased(id, m, tonumber(m[4]), m[5], tonumber(m[6]))
      end
    end
    return { 1, out, swept() }
  end
  housekeep(cfg, limit)
  local ids = {}
  local lease_until = NOW + cfg.visibility
  for _, id in ipairs(pop_ready(cfg, max)) do
    local key = msg_key(id)
    local m = redis.call('HMGET', key, 'body', 'priority', 'published_at', 'attempts')
    if m[1] then
      local attempt = tonumber(m[4]) + 1
      -- Unguessable (the nonce is random per call) and different for every message.
      local receipt = nonce .. '.' .. (#ids + 1)
      redis.call('HSET', key, 'state', 'inflight', 'attempts', attempt, 'receipt', receipt,
        'consumer', consumer, 'lease_until', ms(lease_until))
      redis.call('ZADD', inflight_key, lease_until, id)
      trace(id, 'delivered', { consumer = consumer, attempt = attempt })
      out[#out + 1] = leased(id, m, attempt, receipt, lease_until)
      ids[#ids + 1] = id
    end
  end
  if #ids > 0 then
    redis.call('SET', marker, cjson.encode(ids), 'PX', cfg.visibility)
  end
  return { 1, out, swept() }
end

-- The message ``id`` as leased under ``receipt``: its hash fields, or a status when the
-- receipt does not hold the message's current lease (0 when ``event``, the step's own trace
-- event, shows it already ran with this receipt).
local function check_lease(id, receipt, event)
  local m = redis.call('HMGET', msg_key(id), 'state', 'receipt', 'consumer', 'attempts')
  if m[1] == 'inflight' and m[2] == receipt then
    return m, nil
  end
  if event and already(id, event, receipt) then
    return nil, 0
  end
  if not m[1] and redis.call('EXISTS', trace_prefix .. id) == 0 then
    return nil, NOT_FOUND
  end
  return nil, WRONG_RECEIPT
end

if op == 'ack' then
  -- ARGV[6..]: id, receipt pairs. Answers a status per pair: 1 acknowledged, 0 already
  -- acknowledged with this receipt, NOT_FOUND, WRONG_RECEIPT.
  local out = {}
  for i = 6, #ARGV, 2 do
    local id, receipt = ARGV[i], ARGV[i + 1]
    local m, status = check_lease(id, receipt, 'acked')
    if m then
      redis.call('ZREM', inflight_key, id)
      redis.call('DEL', msg_key(id))
      trace(id, 'acked', { consumer = m[3], attempt = tonumber(m[4]), r = receipt })
      redis.call('EXPIRE', trace_prefix .. id, retention)
      status = 1
    end
    out[#out + 1] = status
  end
  return { 1, out }
end

if op == 'nack' then
  -- ARGV[6..8]: id, receipt, delay (ms).
  local id, receipt, delay = ARGV[6], ARGV[7], tonumber(ARGV[8])
  local m, status = check_lease(id, receipt, 'nacked')
  if not m then
    return { 1, status, swept() }
  end
  redis.call('ZREM', inflight_key, id)
  local fields = { consumer = m[3], attempt = tonumber(m[4]), r = receipt }
  if delay > 0 then
    fields.delay_ms = delay
  end
  trace(id, 'nacked', fields)
  release(cfg, id, delay, 'nacked')
  return { 1, 1, swept() }
end

if op == 'extend' then
  -- ARGV[6..8]: id, receipt, new visibility timeout from now (ms).
  local id, receipt, visibility = ARGV[6], ARGV[7], tonumber(ARGV[8])
  local m, status = check_lease(id, receipt, nil)
  if not m then
    return { 1, status }
  end
  local lease_until = NOW + visibility
  redis.call('ZADD', inflight_key, lease_until, id)
  redis.call('HSET', msg_key(id), 'lease_until', ms(lease_until))
  trace(id, 'extended', { consumer = m[3], attempt = tonumber(m[4]), lease_until = lease_until })
  return { 1, 1, ms(lease_until) }
end

if op == 'stats' then
  housekeep(cfg, tonumber(ARGV[6]))
  return { 1, counts(cfg), swept() }
end

-- The ids at the ends of the line, whose ages bound how long a ready message has waited
-- without reading the whole line: a fifo queue's head (the next out, usually the oldest) and
-- tail (where redriven messages go); a priority queue's next message and the first of its
-- lowest priority (the one a stream of higher priorities starves).
local function line_ends(cfg)
  local ids = {}
  if cfg.kind == 'fifo' then
    for _, index in ipairs({ 0, -1 }) do
      for _, id in ipairs(redis.call('LRANGE', ready_key, index, index)) do
        ids[#ids + 1] = id
      end
    end
    return ids
  end
  local members = redis.call('ZRANGE', ready_key, 0, 0)
  local last = redis.call('ZRANGE', ready_key, -1, -1, 'WITHSCORES')
  if last[1] then
    for _, member in ipairs(redis.call('ZRANGEBYSCORE', ready_key, last[2], last[2], 'LIMIT', 0,
        1)) do
      members[#members + 1] = member
    end
  end
  for _, member in ipairs(members) do
    ids[#ids + 1] = string.sub(member, string.find(member, ':', 1, true) + 1)
  end
  return ids
end

if op == 'gauge' then
  -- ARGV[6]: housekeeping limit. What the metrics read: the counts, the ids at the ends of the
  -- line, what the housekeeping did.
  housekeep(cfg, tonumber(ARGV[6]))
  return { 1, counts(cfg), line_ends(cfg), swept() }
end

if op == 'dead_letters' then
  -- ARGV[6..8]: housekeeping limit, first and last index.
  housekeep(cfg, tonumber(ARGV[6]))
  local out = {}
  for _, id in ipairs(redis.call('LRANGE', dead_key, ARGV[7], ARGV[8])) do
    local m = redis.call('HMGET', msg_key(id), 'body', 'priority', 'published_at', 'attempts',
      'reason', 'dead_at')
    out[#out + 1] = { id, m[1], m[2], m[3], m[4], m[5], m[6] }
  end
  return { 1, out, redis.call('LLEN', dead_key), swept() }
end

if op == 'redrive' then
  -- ARGV[6..7]: how many at most, this call's nonce. Redriven messages start over with a full
  -- set of deliveries. A re-sent call answers the first one's count and moves nothing more.
  local marker = prefix .. 'redrive:' .. ARGV[7]
  local previous = redis.call('GET', marker)
  if previous then
    return { 1, tonumber(previous) }
  end
  local ids = redis.call('LPOP', dead_key, tonumber(ARGV[6])) or {}
  for _, id in ipairs(ids) do
    redis.call('HSET', msg_key(id), 'attempts', 0)
    redis.call('HDEL', msg_key(id), 'reason', 'dead_at')
    trace(id, 'redriven', {})
    make_ready(cfg, id, false)
  end
  redis.call('SET', marker, #ids, 'PX', 600000)
  return { 1, #ids }
end

return redis.error_reply('unknown queue step: ' .. tostring(op))
