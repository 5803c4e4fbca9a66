-- Every step on trips and drivers, as one script on one region's slot: ARGV[1] names the step,
-- ARGV[2] is '1' when the server has native JSON commands (JSON.GET/JSON.SET, as Amazon
-- MemoryDB does) and '0' when the trip document is a JSON string edited here. Every key is in
-- the region's slot (see keys.py); a driver's key is built from the region's tag and the id
-- the trip names.
local op, native = ARGV[1], ARGV[2] == '1'

local NOT_FOUND, DRIVER_NOT_FOUND, TRIP_TAKEN, DRIVER_BUSY, BAD_MOVE, PATH_NOT_FOUND = -1, -2, -3,
  -4, -5, -6
local OUTSIDE_REGION, DRIVER_CHANGED, DOC_REFUSED = -7, -8, -9

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

-- A JSONPath for JSON.GET/JSON.SET: names quoted with only " and \ escaped (the path grammar
-- knows no other escapes; the schemas refuse control characters and a trailing backslash).
local function native_path(tokens)
  local path = '$'
  for _, token in ipairs(tokens) do
    if type(token) == 'number' then
      path = path .. '[' .. string.format('%d', token) .. ']'
    else
      path = path .. '["' .. string.gsub(token, '(["\\])', '\\%1') .. '"]'
    end
  end
  return path
end

-- Map a JSON command's error: a path that does not exist is PATH_NOT_FOUND, a limit of the
-- server (document size, nesting) DOC_REFUSED with its message; anything else is raised.
local function json_error(reply)
  local text = reply.err
  if string.find(text, 'NONEXISTENT', 1, true) or string.find(text, 'OUTOFBOUNDARIES', 1, true)
      or string.find(string.lower(text), 'index', 1, true) then
    return { PATH_NOT_FOUND }
  end
  if string.find(string.lower(text), 'limit', 1, true) or
      string.find(string.lower(text), 'too', 1, true) then
    return { DOC_REFUSED, text }
  end
  return redis.error_reply(text)
end

local function doc_get(key, tokens)
  if native then
    local found = redis.pcall('JSON.GET', key, native_path(tokens))
    if type(found) == 'table' and found.err then
      return nil, json_error(found)
    end
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

-- RedisJSON's JSON.SET adds a member named with \" or \\ in its path under the escaped name
-- (RedisJSON#1298): such a member is spliced into its parent's text, and the parent set whole.
local function set_escaped_member(key, tokens, value)
  local parent_path = native_path({ unpack(tokens, 1, #tokens - 1) })
  local found = redis.pcall('JSON.GET', key, parent_path)
  if type(found) == 'table' and found.err then
    return json_error(found)
  end
  local start = found and skip_ws(found, 2)
  if not start or string.sub(found, start, start) ~= '{' then
    return { PATH_NOT_FOUND }
  end
  local parent = string.sub(found, start, skip_value(found, start) - 1)
  local reply = redis.pcall('JSON.SET', key, parent_path, splice(parent, { tokens[#tokens] }, value))
  if type(reply) == 'table' and reply.err then
    return json_error(reply)
  end
  return nil
end

-- Returns nil when the value was set, else the reply to give: PATH_NOT_FOUND (like JSON.SET,
-- the parent must exist and an index be in range) or the server's refusal.
local function doc_set(key, tokens, value, max_bytes)
  local last = tokens[#tokens]
  if native and type(last) == 'string' and string.find(last, '["\\]') then
    return set_escaped_member(key, tokens, value)
  end
  if native then
    local reply = redis.pcall('JSON.SET', key, native_path(tokens), value)
    if type(reply) == 'table' and reply.err then
      return json_error(reply)
    end
    if not reply then
      return { PATH_NOT_FOUND }
    end
    return nil
  end
  local edited = splice(redis.call('GET', key), tokens, value)
  if not edited then
    return { PATH_NOT_FOUND }
  end
  if max_bytes and #edited > max_bytes then
    return { DOC_REFUSED, 'the trip document would exceed ' .. max_bytes .. ' bytes' }
  end
  redis.call('SET', key, edited)
  return nil
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
  local id, requester, created_at, created_ms, lat, lon, doc, region =
    ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10]
  if redis.call('EXISTS', trip_key) == 0 then
    -- Not yet there (a re-sent call finds its trip and changes nothing). The geo index first:
    -- it is the one command that can refuse the input (a latitude beyond 85.05 degrees), and
    -- it must do so before anything is written.
    redis.call('GEOADD', geo_key, lon, lat, id)
    redis.call('HSET', trip_key, 'created_at', created_at, 'requester', requester,
      'location', lat .. ',' .. lon, 'status', 'requested', 'region', region)
    if native then
      redis.call('JSON.SET', doc_key, '$', doc)
    else
      redis.call('SET', doc_key, doc)
    end
    redis.call('ZADD', pending_key, created_ms, id)
  end
  return { 1, doc_text(doc_key) }
end

if op == 'assign' then
  -- KEYS: trip, doc, pending, pending geo, driver. ARGV[3..]: trip id, driver id, now (ISO).
  local trip_key, doc_key, pending_key, geo_key, driver_key =
    KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
  local trip_id, driver_id, now = ARGV[3], ARGV[4], ARGV[5]
  local trip = redis.call('HMGET', trip_key, 'status', 'driver', 'region')
  if not trip[1] then
    return { NOT_FOUND }
  end
  local driver = redis.call('HMGET', driver_key, 'status', 'trip', 'name', 'car', 'region')
  if not driver[1] then
    return { DRIVER_NOT_FOUND }
  end
  if trip[3] ~= driver[5] then
    -- Two regions can share a slot; the rule is the region, not the slot.
    return { OUTSIDE_REGION, driver[5], trip[3] }
  end
  if trip[1] == 'assigned' and trip[2] == driver_id and driver[2] == trip_id then
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
  -- KEYS: trip, doc, pending, pending geo, and the trip's driver when it has one. ARGV[3..]:
  -- trip id, new status, now (ISO), the driver id the caller read ('' for none).
  local trip_key, doc_key, pending_key, geo_key, driver_key =
    KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
  local trip_id, status, now, driver_id = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
  local allowed = {
    requested = { cancelled = true },
    assigned = { in_progress = true, cancelled = true },
    in_progress = { completed = true, cancelled = true },
  }
  local trip = redis.call('HMGET', trip_key, 'status', 'driver')
  if not trip[1] then
    return { NOT_FOUND }
  end
  if trip[1] == status then
    -- Already there: a repeated request (or a re-send) changes nothing and says so.
    return { 1, doc_text(doc_key) }
  end
  if not (allowed[trip[1]] and allowed[trip[1]][status]) then
    return { BAD_MOVE, trip[1] }
  end
  if (trip[2] or '') ~= driver_id then
    -- Assigned since the caller looked: it declares the driver's key and tries again.
    return { DRIVER_CHANGED }
  end
  local stamp = status .. '_at'
  redis.call('HSET', trip_key, 'status', status, stamp, now)
  doc_set(doc_key, { 'status' }, cjson.encode(status))
  doc_set(doc_key, { stamp }, cjson.encode(now))
  if trip[1] == 'requested' then
    redis.call('ZREM', pending_key, trip_id)
    redis.call('ZREM', geo_key, trip_id)
  end
  if (status == 'completed' or status == 'cancelled') and driver_key then
    if redis.call('HGET', driver_key, 'trip') == trip_id then
      redis.call('HSET', driver_key, 'status', 'available')
      redis.call('HDEL', driver_key, 'trip')
    end
  end
  return { 1, doc_text(doc_key) }
end

if op == 'docs' then
  -- KEYS: trip documents of one slot. Answers each one's text (false when missing).
  local out = {}
  for i, key in ipairs(KEYS) do
    out[i] = doc_text(key) or false
  end
  return out
end

if op == 'doc_get' then
  -- KEYS: doc. ARGV[3]: the path's tokens as a JSON array.
  if redis.call('EXISTS', KEYS[1]) == 0 then
    return { NOT_FOUND }
  end
  local value, failure = doc_get(KEYS[1], cjson.decode(ARGV[3]))
  if failure then
    return failure
  end
  if not value then
    return { PATH_NOT_FOUND }
  end
  return { 1, value }
end

if op == 'doc_set' then
  -- KEYS: doc. ARGV[3..5]: the path's tokens as a JSON array, the new value (JSON text), the
  -- largest document allowed (bytes).
  if redis.call('EXISTS', KEYS[1]) == 0 then
    return { NOT_FOUND }
  end
  local failure = doc_set(KEYS[1], cjson.decode(ARGV[3]), ARGV[4], tonumber(ARGV[5]))
  if failure then
    return failure
  end
  return { 1, ARGV[4] }
end

return redis.error_reply('unknown trips step: ' .. tostring(op))
