-- Delete a profile hash; remember which request deleted it.
-- KEYS[1] profile:<user>, KEYS[2] {profile:<user>}:deleted-by (same slot, see keys.py)
-- ARGV[1] request id, ARGV[2] marker TTL in seconds.
-- Returns 1 when deleted; 0 when there is no profile; when this request already deleted it (a
-- re-send after a lost reply, or a client's retry with the same Idempotency-Key), it is answered
-- as the first attempt was without deleting a profile created since: 2 if the profile is still
-- gone, 3 if it was created again meanwhile (the caller then emits no event).
if redis.call('GET', KEYS[2]) == ARGV[1] then
  if redis.call('EXISTS', KEYS[1]) == 0 then
    return 2
  end
  return 3
end
if redis.call('UNLINK', KEYS[1]) == 1 then
  redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[2])
  return 1
end
return 0
