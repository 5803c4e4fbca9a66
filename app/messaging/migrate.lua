-- Move one item of the first messaging layout into the current one (``migrate.py``), in one
-- step so a crash leaves it either moved or not; running it again moves nothing twice.
-- ARGV[1]: what to move.
--   'message': KEYS: the old message hash ({queue:<name>}:msg:<id>), the queue's bodies and
--     meta hashes; ARGV[2]: the message id.
--   'trace': KEYS: the old trace list (<tag>:trace:<id>), the slot's traces hash and trace
--     expiry set; ARGV[2]: the message id.
-- Answers 1 when it moved something, 0 when there was nothing left to move.
local kind, id = ARGV[1], ARGV[2]

local function number(value)
  if value == false or value == nil then
    return nil
  end
  return tonumber(value)
end

if kind == 'message' then
  local old, bodies, meta = KEYS[1], KEYS[2], KEYS[3]
  local flat = redis.call('HGETALL', old)
  if #flat == 0 then
    return 0
  end
  local f = {}
  for i = 1, #flat, 2 do
    f[flat[i]] = flat[i + 1]
  end
  if redis.call('HEXISTS', meta, id) == 0 then
    local m = { p = number(f.priority) or 0, o = f.order or string.format('%016d', 0),
      a = number(f.attempts) or 0, t = number(f.published_at), d = f.dedupe_id or '',
      s = f.state or 'ready', r = f.receipt, c = f.consumer, l = number(f.lease_until),
      v = number(f.visible_at), why = f.reason, x = number(f.dead_at) }
    redis.call('HSET', meta, id, cjson.encode(m))
    redis.call('HSET', bodies, id, f.body or 'null')
  end
  redis.call('DEL', old)
  return 1
end

if kind == 'trace' then
  local old, traces, expiry = KEYS[1], KEYS[2], KEYS[3]
  local events = redis.call('LRANGE', old, 0, -1)
  if #events == 0 then
    return 0
  end
  if redis.call('HEXISTS', traces, id) == 0 then
    redis.call('HSET', traces, id, table.concat(events, '\n'))
    local ttl = redis.call('PTTL', old)
    if ttl > 0 then
      local clock = redis.call('TIME')
      local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
      redis.call('ZADD', expiry, now + ttl, id)
    end
  end
  redis.call('DEL', old)
  return 1
end

return redis.error_reply('unknown migration step: ' .. tostring(kind))
