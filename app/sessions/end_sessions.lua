-- End sessions of one slot: delete their data, leave a tombstone, drop their index entries.
-- KEYS: sessions:by-user:{t}, then pairs session:{t}:<token>, session-ended:{t}:<token>.
-- ARGV: how long tombstones last (ms), then each session's index entry ('' for none), in the
--       order of the pairs.
-- Returns how many of the sessions were stored (expired or never stored ones are not counted).
local ended = 0
for i = 2, #KEYS, 2 do
  ended = ended + redis.call('DEL', KEYS[i])
  redis.call('SET', KEYS[i + 1], '1', 'PX', ARGV[1])
  local entry = ARGV[i / 2 + 1]
  if entry ~= '' then
    redis.call('ZREM', KEYS[1], entry)
  end
end
return ended
