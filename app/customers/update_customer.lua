-- Update some fields of an existing customer if its version is one the client expects.
-- KEYS: customer:<id>, {customer:<id>}:meta, {customer:<id>}:request:<request id> (one slot).
-- ARGV[1]: how long to remember the request (s); ARGV[2]: the versions the client accepts as
--          ",3,5," ('' for any); then triples: field, stored value, type ('' for a string).
-- Returns {outcome, version}: outcome 1 updated (or updated before by this same request: its
-- version then), 0 no such customer, 2 the version is not one expected (nothing is written).
local done = redis.call('GET', KEYS[3])
if done then
  return {1, tonumber(done)}
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {0, 0}
end
local version = tonumber(redis.call('HGET', KEYS[2], 'version')) or 0
if ARGV[2] ~= '' and not string.find(ARGV[2], ',' .. version .. ',', 1, true) then
  return {2, version}
end
local values = {}
for i = 3, #ARGV, 3 do
  values[#values + 1] = ARGV[i]
  values[#values + 1] = ARGV[i + 1]
  if ARGV[i + 2] == '' then
    redis.call('HDEL', KEYS[2], 'type:' .. ARGV[i])
  else
    redis.call('HSET', KEYS[2], 'type:' .. ARGV[i], ARGV[i + 2])
  end
end
redis.call('HSET', KEYS[1], unpack(values))
version = version + 1
redis.call('HSET', KEYS[2], 'version', version)
redis.call('SET', KEYS[3], version, 'EX', ARGV[1])
return {1, version}
