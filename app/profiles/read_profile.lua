#!lua flags=no-writes
-- Read a profile hash and its generation in one step.
-- KEYS[1] profile:<user>, KEYS[2] {profile:<user>}:generation (same slot, see keys.py).
-- Returns {} when there is no profile, else {generation, {field, value, ...}}. A profile written
-- without this service (the seeds' HSET) has the counter's value, one more than the last
-- deleted generation, while that counter lives; without a counter (never created here, or its
-- expiry after a delete passed) the generation is "": the event then carries none, and counts
-- for the user's current generation, as the seeds' events do.
local fields = redis.call('HGETALL', KEYS[1])
if #fields == 0 then
  return {}
end
return {redis.call('GET', KEYS[2]) or '', fields}
