-- A message's trace, unless it is past its retention (a trace is removed by the steps that
-- sweep, so one may linger a little after it is due). KEYS: the traces hash and the trace
-- expiry set of the message's slot. ARGV[1]: the message id. Answers its events (one JSON
-- object per line) or nil.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local due = redis.call('ZSCORE', KEYS[2], ARGV[1])
if due and tonumber(due) <= now then
  return nil
end
return redis.call('HGET', KEYS[1], ARGV[1])
