-- A message's trace, unless it is past its retention (a trace is removed by the steps that
-- sweep, so one may linger a little after it is due). KEYS: the traces hash and the trace
-- expiry set of the message's slot. ARGV[1]: the message id. Answers its events (one JSON
-- object per line) or nil.
--
-- The expiry set's members are batches of ids separated by spaces (channel.lua,
-- ``expire_traces``; one id each before): a trace is past its retention when its own member is
-- due, or when one of the due batches not yet swept names it. The steps that sweep keep few
-- due; past DUE_BATCHES of them, a trace may show until it is swept.
local DUE_BATCHES = 100
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local id = ARGV[1]
local due = redis.call('ZSCORE', KEYS[2], id)
if due and tonumber(due) <= now then
  return nil
end
for _, batch in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, DUE_BATCHES)) do
  -- A ULID has no space, so a whole id is found only as one of the batch's ids.
  if string.find(batch, id, 1, true) then
    return nil
  end
end
return redis.call('HGET', KEYS[1], id)
