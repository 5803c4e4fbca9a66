-- Every step on trips and drivers, as one script on one region's slot: ARGV[1] names the step,
-- ARGV[2] is '1' when the server has native JSON commands (JSON.GET/JSON.SET, as Amazon
-- MemoryDB does) and '0' when the trip document is a JSON string edited here. Every key is in
-- the region's slot (see keys.py); a driver's key is built from the region's tag and the id
-- the trip names.
local op, native = ARGV[1], ARGV[2] == '1'

local NOT_FOUND, DRIVER_NOT_FOUND, TRIP_TAKEN, DRIVER_BUSY, BAD_MOVE, PATH_NOT_FOUND =
  -1, -2, -3, -4, -5, -6

-- JSON text, edited without decoding it: find the text of the value at a path and splice, so
-- everything else in the document (number spelling, empty arrays, key order) stays as it was.
-- cjson would turn [] into {} and round numbers to 14 digits.
local function skip_ws(s, i)
  return string.find(s, '[^ \t\r\n]', i)
end

local function skip_string(s, i)
  local j = i + 1
  while true do
    local k = string.find(s, '["\\]', j)
    if string.sub(s, k, k) == '\\' then
      j = k + 2
    else
      return k + 1
    end
  end
end

local function skip_value(s, i)
  local c = string.sub(s, i, i)
  if c == '"' then
    return skip_string(s, i)
  end
  if c == '{' or c == '[' then
    local depth, j = 0, i
    while true do
      local k = string.find(s, '[%[%]{}"]', j)
      local ch = string.sub(s, k, k)
      if ch == '"' then
        j = skip_string(s, k)
      elseif ch == '{' or ch == '[' then
        depth, j = depth + 1, k + 1
      else
        depth, j = depth - 1, k + 1
        if depth == 0 then
          return j
        end
      end
    end
  end
  return string.find(s, '[,%]} \t\r\n]', i) or (#s + 1)
end

-- The span [start, stop) of member ``key`` of the object at ``i``; else nil and the position of
-- the object's closing brace.
local function find_member(s, i, key)
  local j = skip_ws(s, i + 1)
  if string.sub(s, j, j) == '}' then
    return nil, j
  end
  while true do
    local key_end = skip_string(s, j)
    local name = cjson.decode(string.sub(s, j, key_end - 1))
    local start = skip_ws(s, skip_ws(s, key_end) + 1)
    local stop = skip_value(s, start)
    if name == key then
      return start, stop
    end
    local after = skip_ws(s, stop)
    if string.sub(s, after, after) == '}' then
      return nil, after
    end
    j = skip_ws(s, after + 1)
  end
end

local function find_element(s, i, index)
  local j = skip_ws(s, i + 1)
  if string.sub(s, j, j) == ']' then
    return nil
  end
  local n = 0
  while true do
    local stop = skip_value(s, j)
    if n == index then
      return j, stop
    end
    local after = skip_ws(s, stop)
    if string.sub(s, after, after) == ']' then
      return nil
    end
    j, n = skip_ws(s, after + 1), n + 1
  end
end

-- The span of the value at ``tokens`` (strings name members, numbers index arrays), or nil.
local function locate(s, tokens, count)
  local start = skip_ws(s, 1)
  local stop = skip_value(s, start)
  for t = 1, count do
    local token, c = tokens[t], string.sub(s, start, start)
    if type(token) == 'string' and c == '{' then
      start, stop = find_member(s, start, token)
    elseif type(token) == 'number' and c == '[' then
      start, stop = find_element(s, start, token)
    else
      return nil
    end
    if not start then
      return nil
    end
  end
  return start, stop
end

-- Set the value at ``tokens`` to ``value`` (JSON text): replace it, or add a member to its
-- parent object. Like JSON.SET, the parent must exist and an array index must be in range.
local function splice(s, tokens, value)
  local parent_start = locate(s, tokens, #tokens - 1)
  if not parent_start then
    return nil
  end
  local start, stop = locate(s, tokens, #tokens)
  if start then
    return string.sub(s, 1, start - 1) .. value .. string.sub(s, stop)
  end
  local last = tokens[#tokens]
  if type(last) ~= 'string' or string.sub(s, parent_start, parent_start) ~= '{' then
    return nil
  end
  local _, close = find_member(s, parent_start, last)
  local sep = ','
  if skip_ws(s, parent_start + 1) == close then
    sep = ''
  end
  return string.sub(s, 1, close - 1) .. sep .. cjson.encode(last) .. ':' .. value
    .. string.sub(s, close)
end

local function native_path(tokens)
  local path = '$'
  for _, token in ipairs(tokens) do
    if type(token) == 'number' then
      path = path .. '[' .. token .. ']'
    else
      path = path .. '[' .. cjson.encode(token) .. ']'
    end
  end
  return path
end

local function doc_get(key, tokens)
  if native then
    local found = redis.call('JSON.GET', key, native_path(tokens))
    if not found then
      return nil
    end
    local values = cjson.decode(found)
    if #values == 0 then
      return nil
    end
    -- Re-read as text: cjson would alter the value (see above).
    return string.sub(found, skip_ws(found, 2), skip_value(found, skip_ws(found, 2)) - 1)
  end
  local text = redis.call('GET', key)
  if not text then
    return nil
  end
  local start, stop = locate(text, tokens, #tokens)
  if not start then
    return nil
  end
  return string.sub(text, start, stop - 1)
end

local function doc_set(key, tokens, value)
  if native then
    -- Nil when the parent does not exist; an error for an index out of range: both mean
    -- "no such place", as in the text version.
    local reply = redis.pcall('JSON.SET', key, native_path(tokens), value)
    if type(reply) == 'table' and reply.err then
      return false
    end
    return reply ~= false
  end
  local edited = splice(redis.call('GET', key), tokens, value)
  if not edited then
    return false
  end
  redis.call('SET', key, edited)
  return true
end

local function doc_text(key)
  if native then
    return redis.call('JSON.GET', key)
  end
  return redis.call('GET', key)
end

if op == 'create' then
  -- KEYS: trip, doc, pending, pending geo. ARGV[3..]: id, requester, created_at (ISO),
  -- created_at (ms), pickup lat, pickup lon, the document.
  local trip_key, doc_key, pending_key, geo_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
  local id, requester, created_at, created_ms, lat, lon, doc =
    ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9]
  if redis.call('EXISTS', trip_key) == 0 then
    -- Not yet there (a re-sent call finds its trip and changes nothing).
    redis.call('HSET', trip_key, 'created_at', created_at, 'requester', requester,
      'location', lat .. ',' .. lon, 'status', 'requested')
    if native then
      redis.call('JSON.SET', doc_key, '$', doc)
    else
      redis.call('SET', doc_key, doc)
    end
    redis.call('ZADD', pending_key, created_ms, id)
    redis.call('GEOADD', geo_key, lon, lat, id)
  end
  return { 1, doc_text(doc_key) }
end

if op == 'assign' then
  -- KEYS: trip, doc, pending, pending geo, driver. ARGV[3..]: trip id, driver id, now (ISO).
  local trip_key, doc_key, pending_key, geo_key, driver_key =
    KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
  local trip_id, driver_id, now = ARGV[3], ARGV[4], ARGV[5]
  local trip = redis.call('HMGET', trip_key, 'status', 'driver')
  if not trip[1] then
    return { NOT_FOUND }
  end
  local driver = redis.call('HMGET', driver_key, 'status', 'trip', 'name', 'car')
  if not driver[1] then
    return { DRIVER_NOT_FOUND }
  end
  if trip[2] == driver_id and driver[2] == trip_id then
    -- Already done by this same request (re-sent) or an identical one: the same answer.
    return { 1, doc_text(doc_key) }
  end
  if trip[1] ~= 'requested' then
    return { TRIP_TAKEN, trip[1] }
  end
  if driver[1] ~= 'available' then
    return { DRIVER_BUSY, driver[2] or '' }
  end
  redis.call('HSET', trip_key, 'status', 'assigned', 'driver', driver_id, 'car', driver[4],
    'assigned_at', now)
  redis.call('HSET', driver_key, 'status', 'busy', 'trip', trip_id)
  redis.call('ZREM', pending_key, trip_id)
  redis.call('ZREM', geo_key, trip_id)
  doc_set(doc_key, { 'status' }, '"assigned"')
  doc_set(doc_key, { 'driver' },
    cjson.encode({ id = driver_id, name = driver[3], car = driver[4] }))
  doc_set(doc_key, { 'assigned_at' }, cjson.encode(now))
  return { 1, doc_text(doc_key) }
end

if op == 'move' then
  -- KEYS: trip, doc, pending, pending geo. ARGV[3..]: trip id, new status, now (ISO), the
  -- region's tag (to name the driver's key).
  local trip_key, doc_key, pending_key, geo_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
  local trip_id, status, now, tag = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
  local allowed = {
    requested = { cancelled = true },
    assigned = { in_progress = true, cancelled = true },
    in_progress = { completed = true, cancelled = true },
  }
  local trip = redis.call('HMGET', trip_key, 'status', 'driver')
  if not trip[1] then
    return { NOT_FOUND }
  end
  if not (allowed[trip[1]] and allowed[trip[1]][status]) then
    return { BAD_MOVE, trip[1] }
  end
  local stamp = status .. '_at'
  redis.call('HSET', trip_key, 'status', status, stamp, now)
  doc_set(doc_key, { 'status' }, cjson.encode(status))
  doc_set(doc_key, { stamp }, cjson.encode(now))
  if trip[1] == 'requested' then
    redis.call('ZREM', pending_key, trip_id)
    redis.call('ZREM', geo_key, trip_id)
  end
  if (status == 'completed' or status == 'cancelled') and trip[2] then
    local driver_key = tag .. ':driver:' .. trip[2]
    if redis.call('HGET', driver_key, 'trip') == trip_id then
      redis.call('HSET', driver_key, 'status', 'available')
      redis.call('HDEL', driver_key, 'trip')
    end
  end
  return { 1, doc_text(doc_key) }
end

if op == 'doc_get' then
  -- KEYS: doc. ARGV[3]: the path's tokens as a JSON array.
  if redis.call('EXISTS', KEYS[1]) == 0 then
    return { NOT_FOUND }
  end
  local value = doc_get(KEYS[1], cjson.decode(ARGV[3]))
  if not value then
    return { PATH_NOT_FOUND }
  end
  return { 1, value }
end

if op == 'doc_set' then
  -- KEYS: doc. ARGV[3..4]: the path's tokens as a JSON array, the new value (JSON text).
  if redis.call('EXISTS', KEYS[1]) == 0 then
    return { NOT_FOUND }
  end
  if not doc_set(KEYS[1], cjson.decode(ARGV[3]), ARGV[4]) then
    return { PATH_NOT_FOUND }
  end
  return { 1, ARGV[4] }
end

return redis.error_reply('unknown trips step: ' .. tostring(op))
