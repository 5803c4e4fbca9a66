#!lua flags=no-writes
-- Read a profile hash and its generation in one step.
-- KEYS[1] profile:<user>, KEYS[2] {profile:<user>}:generation (same slot, see keys.py).
-- Returns {} when there is no profile, else {generation, {field, value, ...}}; a profile written
-- without this service (the seeds' HSET) has the counter's value: 0 at first, one more than the
-- last deleted generation afterwards.
local fields = redis.call('HGETALL', KEYS[1])
if #fields == 0 then
  return {}
end
return {redis.call('GET', KEYS[2]) or '0', fields}
