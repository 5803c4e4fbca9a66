-- Apply profile events to the read counts and acknowledge them, each exactly once.
-- KEYS[1] profile:events (the stream), KEYS[2] {profile:events}:read-counts (same slot: the hash
-- tag is the stream's whole name). ARGV[1] the consumer group, ARGV[2..] entry ids.
-- Each entry is acknowledged first and applied only if that acknowledgement took: a batch that
-- runs again after a crash or a re-send finds its entries acknowledged and changes nothing.
-- The entry is read from the stream here, not taken from the caller, so the effect follows the
-- stored event. A read adds 1 to the user's count; a delete removes the user.
local applied = 0
for i = 2, #ARGV do
  if redis.call('XACK', KEYS[1], ARGV[1], ARGV[i]) == 1 then
    local found = redis.call('XRANGE', KEYS[1], ARGV[i], ARGV[i])
    if #found == 1 then
      local fields = found[1][2]
      local user, kind
      for j = 1, #fields, 2 do
        if fields[j] == 'user' then user = fields[j + 1]
        elseif fields[j] == 'type' then kind = fields[j + 1] end
      end
      if user ~= nil then
        if kind == 'read' then
          redis.call('ZINCRBY', KEYS[2], 1, user)
        elseif kind == 'delete' then
          redis.call('ZREM', KEYS[2], user)
        end
      end
    end
    applied = applied + 1
  end
end
return applied
