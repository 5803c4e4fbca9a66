-- Create a profile hash unless it exists, as a new generation of the user's profile.
-- KEYS[1] profile:<user>, KEYS[2] {profile:<user>}:created-by, KEYS[3] {profile:<user>}:generation
-- (same slot, see keys.py). ARGV[1] request id, ARGV[2] marker TTL in seconds,
-- ARGV[3..] field, value, field, value, ...
-- Generations are whole numbers of at most 15 digits: the aggregator compares them.
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
-- A new generation is above every earlier one: one more than the counter, and at least the
-- server's clock in ms, so it stays above the generations of earlier lives after a deleted
-- profile's counter has expired (delete_profile.lua) and the aggregator has forgotten them.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local generation = string.format('%.0f', math.max(redis.call('INCR', KEYS[3]), now))
-- Without the expiry a delete set: the counter lives as long as the profile.
redis.call('SET', KEYS[3], generation)
redis.call('SET', KEYS[2], generation .. ' ' .. ARGV[1], 'EX', ARGV[2])
return {1, generation}
