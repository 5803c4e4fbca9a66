-- Create a customer: its fields, their JSON types, version 1, and its entry in its slot's index.
-- KEYS: customer:<id>, {customer:<id>}:meta, customers:index:<slot tag> (one slot).
-- ARGV[1]: the id; then triples: field, stored value, type ('' for a string).
-- Returns 1 when created, 0 when the id exists (nothing is written then).
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
local values, meta = {}, {'version', '1'}
for i = 2, #ARGV, 3 do
  values[#values + 1] = ARGV[i]
  values[#values + 1] = ARGV[i + 1]
  if ARGV[i + 2] ~= '' then
    meta[#meta + 1] = 'type:' .. ARGV[i]
    meta[#meta + 1] = ARGV[i + 2]
  end
end
redis.call('HSET', KEYS[1], unpack(values))
redis.call('HSET', KEYS[2], unpack(meta))
redis.call('ZADD', KEYS[3], 0, ARGV[1])
return 1
