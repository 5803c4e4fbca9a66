-- Set and remove keys of a session, creating it if it is new; only the named keys change, so
-- concurrent requests writing different keys keep each other's writes.
-- KEYS: session:{t}:<token>, session-ended:{t}:<token>, sessions:by-user:{t} (one slot).
-- ARGV: now (ms), lifetime (ms), rolling ('1'/'0'), the session id, the number of pairs to set,
--       then field, value pairs, then fields to remove.
-- Returns 0 if the session has ended (nothing is written: a write racing a logout cannot bring
-- the session back), 2 if this write stored it for the first time, else 1.
if redis.call('EXISTS', KEYS[2]) == 1 then
  return 0
end
local new = redis.call('EXISTS', KEYS[1]) == 0
local pairs_end = 5 + 2 * tonumber(ARGV[5])
if pairs_end > 5 then
  redis.call('HSET', KEYS[1], unpack(ARGV, 6, pairs_end))
end
if #ARGV > pairs_end then
  redis.call('HDEL', KEYS[1], unpack(ARGV, pairs_end + 1))
end
redis.call('HSET', KEYS[1], 'm:seen', ARGV[1])
if new then
  redis.call('HSET', KEYS[1], 'm:created', ARGV[1])
end
if new or ARGV[3] == '1' then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  local user = redis.call('HGET', KEYS[1], 'm:user')
  if user then
    redis.call('ZADD', KEYS[3], tonumber(ARGV[1]) + tonumber(ARGV[2]), user .. '\0' .. ARGV[4])
  end
end
if new then
  return 2
end
return 1
