-- Move a video's record forward: queued -> chunking -> chunked, never back.
-- KEYS[1]: the video's hash. ARGV[1]: the new status; ARGV[2]: how many field/value pairs
-- follow that are only filled in when absent (the record's description, which the API and the
-- chunking worker may each be first to write: the job is published before the record is); then
-- those pairs; then pairs to set along with the new status.
-- Returns 1 when the status moved, 0 when the record was already at or past it (a redelivered
-- job after a crash, or the API writing "queued" after the worker has begun).
local key, status = KEYS[1], ARGV[1]
local rank = { queued = 1, chunking = 2, chunked = 3 }
local fill_end = 2 + 2 * tonumber(ARGV[2])
for i = 3, fill_end, 2 do
  redis.call('HSETNX', key, ARGV[i], ARGV[i + 1])
end
local current = redis.call('HGET', key, 'status')
if current and rank[current] >= rank[status] then
  return 0
end
redis.call('HSET', key, 'status', status)
for i = fill_end + 1, #ARGV, 2 do
  redis.call('HSET', key, ARGV[i], ARGV[i + 1])
end
return 1
