-- Store a new record, claiming its unique value first when the model has one.
-- KEYS[1]: the record's hash; KEYS[2] (only for a model with a unique field): the claim on the
--          value, a string holding the owner's id, in the record's slot.
-- ARGV[1]: the record's id; ARGV[2..]: field, value pairs.
-- Returns 1 when stored (also when this same save arrives again: the claim names this id), 0
-- when another record holds the claim; then nothing is written.
if KEYS[2] then
  local owner = redis.call('GET', KEYS[2])
  if owner and owner ~= ARGV[1] then
    return 0
  end
  redis.call('SET', KEYS[2], ARGV[1])
end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
return 1
