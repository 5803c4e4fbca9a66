-- Create a customer: its fields, their JSON types, version 1, and its entry in its slot's index.
-- KEYS: customer:<id>, {customer:<id>}:meta, customers:index:<slot tag>,
--       {customer:<id>}:created-by (one slot).
-- ARGV[1]: the id; ARGV[2]: a digest of the request body; ARGV[3]: how long to remember the
--          request (s); then triples: field, stored value, type ('' for a string).
-- Returns 1 when created; 0 when this same request created it before (a re-send after a lost
-- reply, or a client's retry with its Idempotency-Key): nothing is written then; -1 when the id
-- belongs to another request (an Idempotency-Key reused with another body, or after the
-- request was forgotten); -2 when this request's customer has been deleted since.
local marker = redis.call('GET', KEYS[4])
if marker then
  if marker ~= ARGV[2] then
    return -1
  end
  if redis.call('EXISTS', KEYS[1]) == 1 then
    return 0
  end
  return -2
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  return -1
end
local values, meta = {}, {'version', '1'}
for i = 4, #ARGV, 3 do
  values[#values + 1] = ARGV[i]
  values[#values + 1] = ARGV[i + 1]
  if ARGV[i + 2] ~= '' then
    meta[#meta + 1] = 'type:' .. ARGV[i]
    meta[#meta + 1] = ARGV[i + 2]
  end
end
redis.call('HSET', KEYS[1], unpack(values))
-- A meta hash left behind by other code that deleted only the customer must not leak in.
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[2], unpack(meta))
redis.call('ZADD', KEYS[3], 0, ARGV[1])
redis.call('SET', KEYS[4], ARGV[2], 'EX', ARGV[3])
return 1
