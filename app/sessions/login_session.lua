-- Begin a user's new session (a login): its data, its expiry and its entry in the user index.
-- KEYS: session:{t}:<token>, sessions:by-user:{t} (one slot: the user's).
-- ARGV: now (ms), lifetime (ms), the index entry (<user>\0<session id>), then field, value
--       pairs (the data carried over, the user name, m:user, m:created, m:seen).
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
redis.call('ZADD', KEYS[2], tonumber(ARGV[1]) + tonumber(ARGV[2]), ARGV[3])
return 1
