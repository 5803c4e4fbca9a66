-- Acknowledge profile events and apply each one whose acknowledgement took, exactly once.
-- KEYS[1] the stream (profile:events or profile:events:<i>), KEYS[2] {<stream>}:read-counts
-- (sorted set), KEYS[3] {<stream>}:generations (hash: user -> "<generation>:<1 alive|0 deleted>"),
-- KEYS[4] {<stream>}:deleted (sorted set: user -> ms the delete was applied, by which retention
-- forgets deleted profiles: trim_events.lua). All four share the stream's slot: the hash tag is
-- the stream's whole name.
-- ARGV[1] the consumer group, then four per event delivered to the caller: its id, user, type and
-- generation, as delivered ("" for a field the event lacks; an event without a user is only
-- acknowledged).
-- Returns how many of the ids this call acknowledged (a re-run acknowledges and applies none).
--
-- Each profile's life (create to delete) is a generation, numbered by the create script and
-- carried by every event. The score counts the reads of the user's newest generation, while it
-- is alive. Applying an event only ever moves a user's register forward (a newer generation, or
-- the same one deleted), so the result does not depend on the order events are applied in, nor
-- on the order they reached the stream: a read that raced a delete, a batch finished before an
-- earlier one, a delete retried after the profile was created again, all land right.
-- Events without a generation (written by the seeds' code) belong to the user's current
-- generation when they are applied: with one consumer that is stream order, as in the seeds;
-- with several, or after a claim, such an event can land on a newer generation. Only events
-- with a generation are order-independent.
local stream, counts, generations, deleted = KEYS[1], KEYS[2], KEYS[3], KEYS[4]

local now_ms = nil
local function now()
  if now_ms == nil then
    local clock = redis.call('TIME')
    now_ms = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
  end
  return now_ms
end

-- A generation is a whole number of at most 15 digits (exact in Lua's doubles); anything else
-- in an event is treated as absent, so a malformed event cannot make the script fail half-way.
local function whole(text)
  if text and string.match(text, '^%d+$') and #text <= 15 then
    return tonumber(text)
  end
  return nil
end

-- The register says the user's profile lives again: it leaves the index of deleted ones.
-- A generation as whole digits (Lua's own formatting would turn 15 digits into 1.2e+14).
local function digits(g)
  return string.format('%.0f', g)
end

local function live(user, g, was_alive)
  redis.call('HSET', generations, user, digits(g) .. ':1')
  if not was_alive then
    redis.call('ZREM', deleted, user)
  end
end

local function apply(user, kind, given)
  local current, alive = -1, true
  local stored = redis.call('HGET', generations, user)
  if stored then
    local number, flag = string.match(stored, '^(%d+):([01])$')
    if number then
      current, alive = tonumber(number), flag == '1'
    end
  end
  local generation = whole(given)
  local g = generation
  if g == nil then
    g = math.max(current, 0)
  end
  if kind == 'read' then
    if g > current then
      live(user, g, alive)
      redis.call('ZADD', counts, 1, user)
    elseif g == current and alive then
      redis.call('ZINCRBY', counts, 1, user)
    end
  elseif kind == 'create' then
    if g > current or (g == current and not alive and generation == nil) then
      live(user, g, alive)
      redis.call('ZREM', counts, user)
    end
  elseif kind == 'delete' then
    if g >= current then
      redis.call('HSET', generations, user, digits(g) .. ':0')
      redis.call('ZREM', counts, user)
      redis.call('ZADD', deleted, now(), user)
    end
  end
end

local acknowledged = 0
for i = 2, #ARGV, 4 do
  if redis.call('XACK', stream, ARGV[1], ARGV[i]) == 1 then
    acknowledged = acknowledged + 1
    if ARGV[i + 1] ~= '' then
      apply(ARGV[i + 1], ARGV[i + 2], ARGV[i + 3])
    end
  end
end
return acknowledged
