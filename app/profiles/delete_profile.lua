-- Delete a profile hash; remember which request deleted it.
-- KEYS[1] profile:<user>, KEYS[2] {profile:<user>}:deleted-by (same slot, see keys.py)
-- ARGV[1] request id, ARGV[2] marker TTL in seconds.
-- Returns 1 when deleted, 2 when this request deleted it on an earlier attempt (a re-send after
-- a lost reply), 0 when there was no profile.
if redis.call('UNLINK', KEYS[1]) == 1 then
  redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[2])
  return 1
end
if redis.call('GET', KEYS[2]) == ARGV[1] then
  return 2
end
return 0
