-- Read a session; with rolling expiry, also push its expiry (and its user index entry) back.
-- KEYS: session:{t}:<token>, session-ended:{t}:<token>, sessions:by-user:{t} (one slot).
-- ARGV: now (ms), lifetime (ms), rolling ('1' or '0'), the session id.
-- Returns {-1} for an ended session, {0} for none stored, {1, fields} for a live one.
if redis.call('EXISTS', KEYS[2]) == 1 then
  return {-1}
end
local fields = redis.call('HGETALL', KEYS[1])
if #fields == 0 then
  return {0}
end
if ARGV[3] == '1' then
  redis.call('HSET', KEYS[1], 'm:seen', ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  local user = redis.call('HGET', KEYS[1], 'm:user')
  if user then
    redis.call('ZADD', KEYS[3], tonumber(ARGV[1]) + tonumber(ARGV[2]), user .. '\0' .. ARGV[4])
  end
end
return {1, fields}
