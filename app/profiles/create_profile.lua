-- Create a profile hash unless it exists; remember which request created it.
-- KEYS[1] profile:<user>, KEYS[2] {profile:<user>}:created-by (same slot, see keys.py)
-- ARGV[1] request id, ARGV[2] marker TTL in seconds, ARGV[3..] field, value, field, value, ...
-- Returns 1 when created; 0 when a profile exists; when this request already created it (a
-- re-send after a lost reply, or a client's retry with the same Idempotency-Key), it is answered
-- as the first attempt was without touching what happened since: 2 if the profile is still
-- there, 3 if it was deleted meanwhile (the caller then emits no event).
if redis.call('GET', KEYS[2]) == ARGV[1] then
  if redis.call('EXISTS', KEYS[1]) == 1 then
    return 2
  end
  return 3
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[2])
return 1
