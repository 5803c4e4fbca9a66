-- Create a profile hash unless it exists; remember which request created it.
-- KEYS[1] profile:<user>, KEYS[2] {profile:<user>}:created-by (same slot, see keys.py)
-- ARGV[1] request id, ARGV[2] marker TTL in seconds, ARGV[3..] field, value, field, value, ...
-- Returns 1 when created, 2 when this request created it on an earlier attempt (a re-send after
-- a lost reply), 0 when another request's profile exists.
if redis.call('EXISTS', KEYS[1]) == 1 then
  if redis.call('GET', KEYS[2]) == ARGV[1] then
    return 2
  end
  return 0
end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[2])
return 1
