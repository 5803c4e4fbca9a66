-- Append several entries to one stream in one call (group commit of concurrent appends).
-- KEYS[1] the stream. ARGV: for each entry, its number of fields n, then n field/value pairs.
-- Returns the new entry ids in order.
local ids = {}
local i = 1
while i <= #ARGV do
  local n = tonumber(ARGV[i]) * 2
  local entry = {}
  for j = 1, n do
    entry[j] = ARGV[i + j]
  end
  ids[#ids + 1] = redis.call('XADD', KEYS[1], '*', unpack(entry))
  i = i + n + 1
end
return ids
