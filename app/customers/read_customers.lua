#!lua flags=no-writes
-- Read customers of one slot, each as it is at one moment: fields and meta together.
-- KEYS: pairs customer:<id>, {customer:<id>}:meta (all in one slot).
-- Returns one {fields, meta} pair of flat lists per customer, in KEYS order; a missing
-- customer has empty fields.
-- It writes nothing (the flags above): it runs with EVALSHA_RO, on a replica for the read routes
-- when redis.read_from_replicas is on.
local found = {}
for i = 1, #KEYS, 2 do
  found[#found + 1] = {redis.call('HGETALL', KEYS[i]), redis.call('HGETALL', KEYS[i + 1])}
end
return found
