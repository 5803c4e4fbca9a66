-- Delete a customer, its meta and its index entry, if its version is one the client expects.
-- KEYS: customer:<id>, {customer:<id>}:meta, customers:index:<slot tag>,
--       {customer:<id>}:deleted-by (one slot).
-- ARGV[1]: the id; ARGV[2]: the request id; ARGV[3]: how long to remember the request (s);
-- ARGV[4]: the versions the client accepts as ",3,5," ('' for any).
-- Returns {outcome, version}: 1 deleted, 3 already deleted by this same request, 0 no such
-- customer, 2 the version is not one expected (nothing is deleted then).
if redis.call('GET', KEYS[4]) == ARGV[2] then
  return {3, 0}
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {0, 0}
end
local version = tonumber(redis.call('HGET', KEYS[2], 'version')) or 0
if ARGV[4] ~= '' and not string.find(ARGV[4], ',' .. version .. ',', 1, true) then
  return {2, version}
end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('SET', KEYS[4], ARGV[2], 'EX', ARGV[3])
return {1, version}
