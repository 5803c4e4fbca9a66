-- Append several entries to one stream in one call (group commit of concurrent appends), once.
-- KEYS[1] the stream, KEYS[2] this batch's marker (same slot as the stream).
-- ARGV[1] marker TTL in seconds; then for each entry its number of fields n, then n field/value
-- pairs. Returns the new entry ids in order.
-- A batch sent again after a lost reply finds its marker and returns the ids it stored the
-- first time instead of appending every entry twice. A script runs alone, so a batch's entries
-- are consecutive in the stream: the marker keeps the first id and the count.
local marker = redis.call('GET', KEYS[2])
if marker then
  local first, count = string.match(marker, '^(%S+) (%d+)$')
  local ids = {}
  for _, entry in ipairs(redis.call('XRANGE', KEYS[1], first, '+', 'COUNT', count)) do
    ids[#ids + 1] = entry[1]
  end
  return ids
end
local ids = {}
local i = 2
while i <= #ARGV do
  local n = tonumber(ARGV[i]) * 2
  local entry = {}
  for j = 1, n do
    entry[j] = ARGV[i + j]
  end
  ids[#ids + 1] = redis.call('XADD', KEYS[1], '*', unpack(entry))
  i = i + n + 1
end
redis.call('SET', KEYS[2], ids[1] .. ' ' .. #ids, 'EX', ARGV[1])
return ids
