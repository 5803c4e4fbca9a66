-- Create a profile hash unless it exists, as a new generation of the user's profile.
-- KEYS[1] profile:<user>, KEYS[2] {profile:<user>}:created-by, KEYS[3] {profile:<user>}:generation
-- (same slot, see keys.py). ARGV[1] request id, ARGV[2] marker TTL in seconds,
-- ARGV[3..] field, value, field, value, ...
-- Returns {outcome, generation}: outcome 1 when created, 2 when this request created it already
-- (a re-send after a lost reply, or a client's retry with the same Idempotency-Key: answered as
-- the first attempt was, changing nothing), 3 when this request created it already and that
-- profile has been deleted since (changing nothing either), 0 when a profile exists.
local marker = redis.call('GET', KEYS[2])
if marker then
  local generation, request = string.match(marker, '^(%d+) (.*)$')
  if request == ARGV[1] then
    -- The counter holds the generation of the live profile it created, until a delete.
    if redis.call('EXISTS', KEYS[1]) == 1 and redis.call('GET', KEYS[3]) == generation then
      return {2, generation}
    end
    return {3, generation}
  end
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {0, '0'}
end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
local generation = tostring(redis.call('INCR', KEYS[3]))
redis.call('SET', KEYS[2], generation .. ' ' .. ARGV[1], 'EX', ARGV[2])
return {1, generation}
