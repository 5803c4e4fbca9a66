-- Read when sessions of one slot began and were last used.
-- KEYS: session:{t}:<token> ... (one slot). Returns {created, seen} per key (false: gone).
local found = {}
for i = 1, #KEYS do
  found[i] = redis.call('HMGET', KEYS[i], 'm:created', 'm:seen')
end
return found
