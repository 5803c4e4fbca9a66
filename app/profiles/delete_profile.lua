-- Delete a profile hash, ending its generation.
-- KEYS[1] profile:<user>, KEYS[2] {profile:<user>}:deleted-by, KEYS[3] {profile:<user>}:generation
-- (same slot, see keys.py). ARGV[1] request id, ARGV[2] marker TTL in seconds, ARGV[3] how long
-- the ended profile's generation counter is kept (seconds).
-- Returns {outcome, generation}: outcome 1 when deleted, 2 when this request deleted it already
-- (a re-send after a lost reply, or a client's retry with the same Idempotency-Key: answered as
-- the first attempt was), 3 when this request deleted it already and the user has a profile
-- again since (never deleted by the retry), 0 when there is no profile.
-- A profile written without this service (the seeds' HSET) has the generation the counter
-- holds (one more than the last deleted one), or none ("") without a counter.
local marker = redis.call('GET', KEYS[2])
if marker then
  local generation, request = string.match(marker, '^(%d*) (.*)$')
  if request == ARGV[1] then
    if redis.call('EXISTS', KEYS[1]) == 1 then
      return {3, generation}
    end
    return {2, generation}
  end
end
if redis.call('UNLINK', KEYS[1]) == 1 then
  -- Without a counter (a profile written by other code), "": the event ends whatever
  -- generation is current when it is applied.
  local generation = redis.call('GET', KEYS[3]) or ''
  -- The ended generation is never reused: a profile written again by other code (the seeds'
  -- HSET) is read as the next one, and the next create here takes the one after.
  redis.call('INCR', KEYS[3])
  -- Not forever: a user who never comes back leaves nothing behind. A profile created after it
  -- expired still gets a newer generation (create_profile.lua starts from the clock).
  redis.call('EXPIRE', KEYS[3], ARGV[3])
  redis.call('SET', KEYS[2], generation .. ' ' .. ARGV[1], 'EX', ARGV[2])
  return {1, generation}
end
return {0, '0'}
