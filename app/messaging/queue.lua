-- Every step on a queue, as one script: ARGV[1] names the step.
-- KEYS (every key the script touches is declared, all in the queue's slot; see keys.py):
--   1 config (hash), 2 ready (list for fifo, sorted set for priority), 3 delayed (sorted set:
--   visible-at ms), 4 inflight (sorted set: lease-until ms), 5 dead (list of ids),
--   6 bodies (hash: message id -> body), 7 meta (hash: message id -> the message's state as
--   JSON), 8 traces (hash: message id -> its events, one JSON object per line), 9 trace
--   expiry (sorted set: batches of message ids -> when their traces go, ms), 10 receive calls
--   (hash: see leave_call), then the step's markers (de-duplication, receive, redrive), which
--   the caller names.
-- ARGV[2..3]: the queue's name, the trace retention (s); the step's own arguments follow.
-- channel.lua comes first (NOW, call_many, state records, traces).
local config_key, ready_key, delayed_key, inflight_key, dead_key, bodies_key, meta_key =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local op, queue, retention = ARGV[1], ARGV[2], tonumber(ARGV[3])
use_traces(KEYS[8], KEYS[9], 'queue', queue)

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

-- A message's state (a record of channel.lua), in this order: p priority, o publish order,
-- a attempts, t published at, d dedupe id, s state (ready, delayed, inflight, dead), r receipt,
-- c consumer, l lease until, v visible at, why and x (the reason and time it was
-- dead-lettered), w when the current delivery was made, while its trace line is owed
-- (``owed_delivery``), g whether its lease is one of its receive call's (``leave_call``). The
-- busy steps read and write the values; the others use a table.
local function decode(raw)
  if is_json(raw) then
    local m = cjson.decode(raw)
    return m.p, m.o, m.a, m.t, m.d, m.s, m.r, m.c, m.l, m.v, m.why, m.x, m.w, m.g
  end
  return cmsgpack.unpack(raw)
end

local function as_state(raw)
  local m = {}
  m.p, m.o, m.a, m.t, m.d, m.s, m.r, m.c, m.l, m.v, m.why, m.x, m.w, m.g = decode(raw)
  return m
end

local function load(id)
  local raw = redis.call('HGET', meta_key, id)
  if not raw then
    return nil
  end
  return as_state(raw)
end

local function save(id, m)
  redis.call('HSET', meta_key, id,
    cmsgpack.pack(m.p, m.o, m.a, m.t, m.d, m.s, m.r, m.c, m.l, m.v, m.why, m.x, m.w, m.g))
end

-- How many messages are in flight is a count in the config hash: the in-flight set has a
-- member per receive call, not per message. A queue of an earlier layout has no count yet,
-- and a member per leased message: the count starts from it.
local function load_config()
  local c = redis.call('HMGET', config_key, 'kind', 'visibility_timeout_ms', 'max_deliveries',
    'in_flight')
  if not c[1] then
    return nil
  end
  if not c[4] then
    redis.call('HSET', config_key, 'in_flight', redis.call('ZCARD', inflight_key))
  end
  return { kind = c[1], visibility = tonumber(c[2]), max = tonumber(c[3]) }
end

local function count_in_flight(change)
  if change ~= 0 then
    redis.call('HINCRBY', config_key, 'in_flight', change)
  end
end

-- A receive call's leases are kept together (channel.lua, ``leave_call``): the in-flight set
-- has one member for the call (when its leases end). A message leaves its call when it is
-- acknowledged, nacked or its lease extended (it then has a member of its own, as every lease
-- of an earlier layout has). The housekeeping takes apart a call whose leases ended.
use_calls(KEYS[10], { inflight_key })

-- The lease of message ``id`` (state ``m``) ends: it leaves its call, or loses its own member.
local function end_lease(id, m)
  if m.g then
    leave_call(nonce_of(m.r), 1)
  else
    redis.call('ZREM', inflight_key, id)
  end
  m.g = nil
end

-- Put a message in line. A redelivery goes to the head of a fifo queue (it was first in line
-- before); a priority queue orders by priority, then by the publish sequence the message keeps.
local function push_ready(cfg, id, front, m)
  if cfg.kind == 'fifo' then
    if front then
      redis.call('LPUSH', ready_key, id)
    else
      redis.call('RPUSH', ready_key, id)
    end
  else
    redis.call('ZADD', ready_key, -m.p, m.o .. ':' .. id)
  end
end

-- Make a message that was leased, delayed or dead receivable again (its lease, if it had one,
-- is already cleared: see release).
local function make_ready(cfg, id, m, front)
  push_ready(cfg, id, front, m)
  m.s = 'ready'
  m.v = nil
  save(id, m)
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

local function dead_letter(id, m, reason)
  m.s, m.why, m.x = 'dead', reason, NOW
  save(id, m)
  redis.call('RPUSH', dead_key, id)
  trace(id, 'dead-lettered', 'reason', reason)
  dead_count = dead_count + 1
end

-- A lease ended without an ack (expired or nacked): deliver again after ``delay`` ms, or
-- dead-letter the message when it has had all its deliveries.
local function release(cfg, id, m, delay, why)
  m.r, m.c, m.l, m.w, m.g = nil, nil, nil, nil, nil
  count_in_flight(-1)
  if m.a >= cfg.max then
    dead_letter(id, m, why .. ' on delivery ' .. m.a .. ' of ' .. cfg.max)
  elseif delay > 0 then
    redis.call('ZADD', delayed_key, NOW + delay, id)
    m.s, m.v = 'delayed', NOW + delay
    save(id, m)
  else
    make_ready(cfg, id, m, true)
  end
end

-- Due delayed messages become ready and expired leases end, at most ``limit`` of each per
-- call, so no call runs long; every step that reads the queue's state does this first.
local function housekeep(cfg, limit)
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', delayed_key, '-inf', NOW, 'LIMIT', 0, limit)) do
    redis.call('ZREM', delayed_key, id)
    local m = load(id)
    if m then
      make_ready(cfg, id, m, false)
    end
  end
  local function expire(id, m)
    append_trace(id, owed_delivery(m.c, m.a, m.w)
      .. event_line('expired', 'consumer', m.c, 'attempt', m.a))
    expired_count = expired_count + 1
    release(cfg, id, m, 0, 'lease expired')
  end
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', inflight_key, '-inf', NOW, 'LIMIT', 0,
      limit)) do
    if string.byte(member, 1) == 64 then
      -- A call ('@'): its leases that are still its own end, up to the limit; the others get a
      -- member of their own, for a later call.
      local nonce = string.sub(member, 2)
      local ids, ends_at = take_call(nonce)
      local prefix = nonce .. '.'
      for i, raw in ipairs(call_many('HMGET', meta_key, ids)) do
        if raw then
          local m = as_state(raw)
          if m.s == 'inflight' and m.g and string.sub(m.r, 1, #prefix) == prefix then
            m.g = nil
            if expired_count < limit then
              expire(ids[i], m)
            else
              save(ids[i], m)
              redis.call('ZADD', inflight_key, ends_at, ids[i])
            end
          end
        end
      end
    else
      redis.call('ZREM', inflight_key, member)
      local m = load(member)
      if m then
        expire(member, m)
      end
    end
  end
end

local function counts(cfg)
  local ready
  if cfg.kind == 'fifo' then
    ready = redis.call('LLEN', ready_key)
  else
    ready = redis.call('ZCARD', ready_key)
  end
  return { ready, redis.call('ZCARD', delayed_key),
    tonumber(redis.call('HGET', config_key, 'in_flight')), redis.call('LLEN', dead_key) }
end

if op == 'create' then
  local kind, visibility, max = ARGV[4], ARGV[5], ARGV[6]
  local existing = redis.call('HGET', config_key, 'kind')
  if existing and existing ~= kind then
    return { CONFLICT, existing }
  end
  redis.call('HSET', config_key, 'kind', kind, 'visibility_timeout_ms', visibility,
    'max_deliveries', max)
  if existing then
    return { 0, kind }
  end
  redis.call('HSET', config_key, 'created_at', ms(NOW), 'seq', 0, 'in_flight', 0)
  return { 1, kind }
end

local cfg = load_config()
if not cfg then
  return { NOT_FOUND }
end

if op == 'config' then
  housekeep(cfg, tonumber(ARGV[4]))
  local c = redis.call('HMGET', config_key, 'created_at')
  return { 1, cfg.kind, cfg.visibility, cfg.max, c[1], counts(cfg), swept() }
end

if op == 'publish' then
  -- ARGV[4]: de-duplication window (ms), ARGV[5]: how many due traces to sweep; then per
  -- message: id, body, priority, delay (ms), dedupe id ('' for none), the index in KEYS of its
  -- de-duplication marker ('0' for none). Answers each message's id and whether this call
  -- enqueued it.
  local window = ARGV[4]
  if cfg.kind == 'fifo' then
    for i = 8, #ARGV, 6 do
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
  -- Which of these messages this call published already (a re-send: their trace exists).
  local ids = {}
  for i = 6, #ARGV, 6 do
    ids[#ids + 1] = ARGV[i]
  end
  local seen = call_many('HMGET', traces_key, ids)
  local bodies, metas, traces, ready, delayed = {}, {}, {}, {}, {}
  for k, id in ipairs(ids) do
    local i = 6 + (k - 1) * 6
    local body, priority, delay, dedupe, marker_index = ARGV[i + 1], tonumber(ARGV[i + 2]),
      tonumber(ARGV[i + 3]), ARGV[i + 4], tonumber(ARGV[i + 5])
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
      -- A re-sent call (redis-py after a lost reply): this call published the message.
      out[#out + 1] = { id, 1 }
    else
      seq = seq + 1
      local order = string.format('%016d', seq)
      bodies[#bodies + 1] = id
      bodies[#bodies + 1] = body
      local line = '{"event":"published' .. TRACE_HEAD .. ',"priority":' .. ARGV[i + 2]
      metas[#metas + 1] = id
      if delay > 0 then
        delayed[#delayed + 1] = int(NOW + delay)
        delayed[#delayed + 1] = id
        metas[#metas + 1] = cmsgpack.pack(priority, order, 0, NOW, dedupe, 'delayed', nil, nil,
          nil, NOW + delay)
        line = line .. ',"delay_ms":' .. ARGV[i + 3]
      else
        if cfg.kind == 'fifo' then
          ready[#ready + 1] = id
        else
          ready[#ready + 1] = ARGV[i + 2] == '0' and '0' or '-' .. ARGV[i + 2]
          ready[#ready + 1] = order .. ':' .. id
        end
        metas[#metas + 1] = cmsgpack.pack(priority, order, 0, NOW, dedupe, 'ready')
      end
      traces[#traces + 1] = id
      traces[#traces + 1] = line .. '}'
      out[#out + 1] = { id, 1 }
    end
  end
  if #bodies > 0 then
    call_many('HSET', bodies_key, bodies)
    call_many('HSET', meta_key, metas)
    call_many('HSET', traces_key, traces)
  end
  if #ready > 0 then
    call_many(cfg.kind == 'fifo' and 'RPUSH' or 'ZADD', ready_key, ready)
  end
  if #delayed > 0 then
    call_many('ZADD', delayed_key, delayed)
  end
  if seq ~= first_seq then
    redis.call('HSET', config_key, 'seq', seq)
  end
  sweep(tonumber(ARGV[5]))
  return { 1, out }
end



if op == 'receive' then
  -- ARGV[4..7]: consumer, how many at most, this call's nonce, housekeeping limit. KEYS[11]:
  -- this call's receive marker (the ids it leased, for a re-send). Answers the deliveries in a
  -- row, seven values each: id, body, attempt, receipt, priority, published at, lease end.
  local consumer, max, nonce, limit = ARGV[4], tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[7])
  local marker = KEYS[11]
  local out = {}
  local previous = redis.call('GET', marker)
  if previous then
    -- A re-sent call: answer the messages the first one leased, while those leases hold.
    for _, id in ipairs(marked_ids(previous)) do
      local m = load(id)
      if m and m.r and string.sub(m.r, 1, #nonce + 1) == nonce .. '.' then
        append(out, id, redis.call('HGET', bodies_key, id), m.a, m.r, m.p, m.t, m.l)
      end
    end
    return { 1, out, swept() }
  end
  housekeep(cfg, limit)
  local lease_until = NOW + cfg.visibility
  local popped = pop_ready(cfg, max)
  if #popped > 0 then
    local metas = call_many('HMGET', meta_key, popped)
    local bodies = call_many('HMGET', bodies_key, popped)
    local ids, saved = {}, {}
    for i, id in ipairs(popped) do
      if metas[i] then
        local priority, order, attempt, published_at, dedupe = decode(metas[i])
        attempt = attempt + 1
        -- Unguessable (the nonce is random per call) and different for every message.
        local receipt = nonce .. '.' .. int(#ids + 1)
        ids[#ids + 1] = id
        saved[#saved + 1] = id
        saved[#saved + 1] = cmsgpack.pack(priority, order, attempt, published_at, dedupe,
          'inflight', receipt, consumer, lease_until, nil, nil, nil, NOW, true)
        append(out, id, bodies[i], attempt, receipt, priority, published_at, lease_until)
      end
    end
    if #ids > 0 then
      local listed = table.concat(ids, ' ')
      call_many('HSET', meta_key, saved)
      open_call(nonce, ids, listed, { int(lease_until) })
      count_in_flight(#ids)
      redis.call('SET', marker, listed, 'PX', cfg.visibility)
    end
  end
  return { 1, out, swept() }
end

-- The message ``id`` as leased under ``receipt``: its state, or a status when the receipt does
-- not hold the message's current lease (0 when ``event``, the step's own trace event, shows it
-- already ran with this receipt).
local function check_lease(id, receipt, event)
  local m = load(id)
  if m and m.s == 'inflight' and m.r == receipt then
    return m, nil
  end
  if event and already(id, event, receipt, nil) then
    return nil, 0
  end
  if not m and not traced(id) then
    return nil, NOT_FOUND
  end
  return nil, WRONG_RECEIPT
end

if op == 'ack' then
  -- ARGV[4]: how many due traces to sweep besides; ARGV[5..]: id, receipt pairs. Answers a
  -- status per pair: 1 acknowledged, 0 already acknowledged with this receipt, NOT_FOUND,
  -- WRONG_RECEIPT.
  local out = {}
  local ids, receipts = {}, {}
  for i = 5, #ARGV, 2 do
    ids[#ids + 1] = ARGV[i]
    receipts[#receipts + 1] = ARGV[i + 1]
  end
  local metas = call_many('HMGET', meta_key, ids)
  -- The messages this call acknowledged, by id: the receipt it took (a pair repeated in the
  -- call answers as a repeated ack).
  local acked = {}
  local done, lines = {}, {}
  -- The calls these messages leave, and the messages with an in-flight member of their own.
  local calls, own = leaving_calls(), {}
  for k, id in ipairs(ids) do
    local receipt, status = receipts[k], nil
    if acked[id] then
      status = acked[id] == receipt and 0 or WRONG_RECEIPT
    else
      local attempt, state, held, consumer, delivered_at, in_call
      if metas[k] then
        local _
        _, _, attempt, _, _, state, held, consumer, _, _, _, _, delivered_at, in_call =
          decode(metas[k])
      end
      if state == 'inflight' and held == receipt then
        acked[id] = receipt
        done[#done + 1] = id
        if in_call then
          calls.add(receipt, id)
        else
          own[#own + 1] = id
        end
        lines[#lines + 1] = acked_line(consumer, attempt, receipt, delivered_at)
        status = 1
      elseif already(id, 'acked', receipt, nil) then
        status = 0
      elseif not metas[k] and not traced(id) then
        status = NOT_FOUND
      else
        status = WRONG_RECEIPT
      end
    end
    out[#out + 1] = status
  end
  local finished = #done
  if finished > 0 then
    calls.leave()
    call_many('ZREM', inflight_key, own)
    count_in_flight(-finished)
    call_many('HDEL', meta_key, done)
    call_many('HDEL', bodies_key, done)
    trace_many(done, lines)
    expire_traces(done, int(NOW + retention * 1000))
  end
  -- At least as many as this call finished, so the sweeping keeps up with the acks.
  sweep(tonumber(ARGV[4]) + finished)
  return { 1, out }
end

if op == 'nack' then
  -- ARGV[4..6]: id, receipt, delay (ms).
  local id, receipt, delay = ARGV[4], ARGV[5], tonumber(ARGV[6])
  local m, status = check_lease(id, receipt, 'nacked')
  if not m then
    return { 1, status, swept() }
  end
  end_lease(id, m)
  append_trace(id, owed_delivery(m.c, m.a, m.w) .. event_line('nacked', 'consumer', m.c,
    'attempt', m.a, 'r', receipt, 'delay_ms', delay > 0 and delay or nil))
  release(cfg, id, m, delay, 'nacked')
  return { 1, 1, swept() }
end

if op == 'extend' then
  -- ARGV[4..6]: id, receipt, new visibility timeout from now (ms).
  local id, receipt, visibility = ARGV[4], ARGV[5], tonumber(ARGV[6])
  local m, status = check_lease(id, receipt, nil)
  if not m then
    return { 1, status }
  end
  local lease_until = NOW + visibility
  end_lease(id, m)
  redis.call('ZADD', inflight_key, lease_until, id)
  append_trace(id, owed_delivery(m.c, m.a, m.w) .. event_line('extended', 'consumer', m.c,
    'attempt', m.a, 'lease_until', lease_until))
  m.l, m.w = lease_until, nil
  save(id, m)
  return { 1, 1, ms(lease_until) }
end

if op == 'owed' then
  -- ARGV[4]: a message id. Answers the line its trace is owed for a delivery in flight (nil
  -- when none): reading a trace adds it.
  local m = load(ARGV[4])
  if m and m.s == 'inflight' and m.w then
    return { 1, owed_delivery(m.c, m.a, m.w) }
  end
  return { 1, false }
end

if op == 'stats' then
  housekeep(cfg, tonumber(ARGV[4]))
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
  -- ARGV[4]: housekeeping limit. What the metrics read: the counts, the ids at the ends of the
  -- line, what the housekeeping did.
  housekeep(cfg, tonumber(ARGV[4]))
  return { 1, counts(cfg), line_ends(cfg), swept() }
end

if op == 'dead_letters' then
  -- ARGV[4..6]: housekeeping limit, first and last index.
  housekeep(cfg, tonumber(ARGV[4]))
  local out = {}
  for _, id in ipairs(redis.call('LRANGE', dead_key, ARGV[5], ARGV[6])) do
    local m = load(id)
    if m then
      out[#out + 1] = { id, redis.call('HGET', bodies_key, id), m.p, ms(m.t), m.a, m.why,
        ms(m.x) }
    end
  end
  return { 1, out, redis.call('LLEN', dead_key), swept() }
end

if op == 'redrive' then
  -- ARGV[4]: how many at most. KEYS[11]: this call's redrive marker. Redriven messages start
  -- over with a full set of deliveries. A re-sent call answers the first one's count and
  -- moves nothing more.
  local marker = KEYS[11]
  local previous = redis.call('GET', marker)
  if previous then
    return { 1, tonumber(previous) }
  end
  local ids = redis.call('LPOP', dead_key, tonumber(ARGV[4])) or {}
  for _, id in ipairs(ids) do
    local m = load(id)
    if m then
      m.a, m.why, m.x = 0, nil, nil
      trace(id, 'redriven')
      make_ready(cfg, id, m, false)
    end
  end
  redis.call('SET', marker, #ids, 'PX', 600000)
  return { 1, #ids }
end

return redis.error_reply('unknown queue step: ' .. tostring(op))
