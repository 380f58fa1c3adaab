"""The store's Lua scripts (impress/store.py): each state change of a job is one atomic step.

Every step that changes a job ends with `touch`, which keeps the job's satellites in line with it:
    - `expires_at` = now + the job's own TTL (`ttl_s`, from the request's expires_in), and that TTL on
      the hash and its event stream;
    - the tombstone `{job}:gone` (the owner's id) outlives the job by a grace period, so its URLs answer
      410 `gone` after expiry while ids that never existed stay 404;
    - one entry on the job's event stream `{job}:events`: the whole hash as it is after the step, so an
      event shows the job exactly as GET /v1/jobs/{id} did at that moment, and a reader resumes after
      any entry id (Last-Event-ID).
ARGV[1..4] of every script: now, the default TTL (records written before per-job TTLs), the
tombstone's grace period, the stream's length cap; each script's own arguments follow from ARGV[5].
"""
from __future__ import annotations

TOUCH_ARGS = 4

_TOUCH = """
local now, default_ttl, grace, maxlen = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local function touch(job)
  local ttl = tonumber(redis.call('HGET', job, 'ttl_s') or default_ttl)
  redis.call('HSET', job, 'expires_at', now + ttl)
  redis.call('EXPIRE', job, ttl)
  redis.call('SET', job .. ':gone', redis.call('HGET', job, 'owner') or '', 'EX', ttl + grace)
  redis.call('XADD', job .. ':events', 'MAXLEN', '~', maxlen, '*', unpack(redis.call('HGETALL', job)))
  redis.call('EXPIRE', job .. ':events', ttl)
end
"""

# KEYS[1] job hash, KEYS[2] stats hash; ARGV[5] allowed current states (comma list); ARGV[6] new state;
# ARGV[7] n, then n counter/amount pairs, then field/value pairs. Counts the transition under
# "{kind}:{state}" and adds each amount under "{kind}:{counter}", in the same step as the state change,
# so /metrics never lags a finished job. Returns 1 when the transition happened, 0 otherwise.
TRANSITION = _TOUCH + """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return -1 end
local allowed = ',' .. ARGV[5] .. ','
if not string.find(allowed, ',' .. state .. ',', 1, true) then return 0 end
local fields_from = 8 + 2 * tonumber(ARGV[7])
redis.call('HSET', KEYS[1], 'state', ARGV[6])
for i = fields_from, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
local kind = redis.call('HGET', KEYS[1], 'kind')
redis.call('HINCRBY', KEYS[2], kind .. ':' .. ARGV[6], 1)
for i = 8, fields_from - 1, 2 do redis.call('HINCRBYFLOAT', KEYS[2], kind .. ':' .. ARGV[i], ARGV[i + 1]) end
touch(KEYS[1])
return 1
"""

# KEYS[1] job hash, KEYS[2] all jobs zset, KEYS[3] stats, KEYS[4] owner's active set, KEYS[5] owner's
# jobs zset, KEYS[6] owner's stored bytes, KEYS[7] owner's stored zset, then one key per input blob;
# ARGV[5] the service TTL s (of the indexes and quota counts), ARGV[6] most unfinished jobs of the owner
# (0: no limit), ARGV[7] job id, ARGV[8] created_at, ARGV[9] kind, ARGV[10] the job-key prefix, ARGV[11]
# the owner's stored-bytes quota (0: none), ARGV[12] most jobs listed per owner, ARGV[13] n blobs, then
# the n blobs' bytes, then the record's field/value pairs. The cap and the quota are checked before
# anything is written, all in one step: a refused submission stores nothing. At the cap the owner's set
# is pruned of finished or expired jobs and counted again (so the common path is O(1)). Returns {0, 0}
# when created, {1, unfinished} at the cap, {2, stored bytes} past the quota. The job lists drop expired
# ids and keep the newest ARGV[12]. The blobs get the job's own TTL from JobStore.hold_blobs after.
CREATE = _TOUCH + """
local ttl, cap, id, created = tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7], tonumber(ARGV[8])
local quota, listed, nblobs = tonumber(ARGV[11]), tonumber(ARGV[12]), tonumber(ARGV[13])
if cap > 0 and redis.call('SCARD', KEYS[4]) >= cap then
  local n = 0
  for _, other in ipairs(redis.call('SMEMBERS', KEYS[4])) do
    local state = redis.call('HGET', ARGV[10] .. other, 'state')
    if state == 'queued' or state == 'running' then n = n + 1 else redis.call('SREM', KEYS[4], other) end
  end
  if n >= cap then return {1, n} end
end
for _, gone in ipairs(redis.call('ZRANGEBYSCORE', KEYS[7], '-inf', created)) do
  redis.call('DECRBY', KEYS[6], tonumber(string.match(gone, '^(%d+):')))
end
redis.call('ZREMRANGEBYSCORE', KEYS[7], '-inf', created)
local size = 0
for i = 1, nblobs do size = size + string.len(ARGV[13 + i]) end
local stored = tonumber(redis.call('GET', KEYS[6]) or '0')
if quota > 0 and stored + size > quota then return {2, stored} end
for i = 1, nblobs do redis.call('SET', KEYS[7 + i], ARGV[13 + i], 'EX', ttl) end
redis.call('INCRBY', KEYS[6], size)
redis.call('EXPIRE', KEYS[6], ttl)
redis.call('ZADD', KEYS[7], created + ttl, size .. ':' .. id)
redis.call('EXPIRE', KEYS[7], ttl)
for i = 14 + nblobs, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
touch(KEYS[1])
for _, list in ipairs({KEYS[2], KEYS[5]}) do
  redis.call('ZADD', list, created, id)
  redis.call('ZREMRANGEBYSCORE', list, '-inf', created - ttl)
  redis.call('ZREMRANGEBYRANK', list, 0, -listed - 1)
  redis.call('EXPIRE', list, ttl)
end
redis.call('HINCRBY', KEYS[3], ARGV[9] .. ':queued', 1)
redis.call('SADD', KEYS[4], id)
redis.call('EXPIRE', KEYS[4], ttl)
return {0, 0}
"""

# KEYS[1] job hash, KEYS[2] stats hash; ARGV[5] max attempts. A queued job, or a running one
# redelivered after its worker died, counts one more attempt and runs, unless the attempts are spent
# (then it fails: worker_lost). Returns {outcome, attempt}: outcome 1 started, 2 failed now
# (worker_lost), 0 not started (already finished), -1 no such job.
START = _TOUCH + """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {-1, 0} end
if state ~= 'queued' and state ~= 'running' then
  return {0, tonumber(redis.call('HGET', KEYS[1], 'attempts') or '0')}
end
local attempt = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
local kind = redis.call('HGET', KEYS[1], 'kind')
if attempt > tonumber(ARGV[5]) then
  redis.call('HSET', KEYS[1], 'state', 'failed', 'finished_at', ARGV[1], 'error_code', 'worker_lost',
             'error_message', 'the worker running this job died ' .. (attempt - 1) .. ' times')
  redis.call('HINCRBY', KEYS[2], kind .. ':failed', 1)
  touch(KEYS[1])
  return {2, attempt}
end
redis.call('HSET', KEYS[1], 'state', 'running', 'started_at', ARGV[1], 'progress_step', 0)
redis.call('HINCRBY', KEYS[2], kind .. ':running', 1)
touch(KEYS[1])
return {1, attempt}
"""

# KEYS[1] job hash, KEYS[2] cancel flag; ARGV[5] step, ARGV[6] total. Writes progress only to a job
# that still exists and runs. Returns 1 when the job must stop (cancel requested, or gone).
PROGRESS = _TOUCH + """
if redis.call('HGET', KEYS[1], 'state') ~= 'running' then return 1 end
redis.call('HSET', KEYS[1], 'progress_step', ARGV[5], 'progress_total', ARGV[6])
touch(KEYS[1])
return redis.call('EXISTS', KEYS[2])
"""

# KEYS: blob keys; ARGV[1] job id, ARGV[2] its TTL s, ARGV[3] the job-key prefix. Each blob's holder set
# `{blob}:jobs` gets the job, and the blob lives as long as its longest-lived holder (a holder whose
# job expired is dropped), so two jobs that uploaded the same bytes share them safely.
HOLD = """
for _, blob in ipairs(KEYS) do
  local holders = blob .. ':jobs'
  redis.call('SADD', holders, ARGV[1])
  local ttl = tonumber(ARGV[2])
  for _, other in ipairs(redis.call('SMEMBERS', holders)) do
    if other ~= ARGV[1] then
      local left = redis.call('TTL', ARGV[3] .. other)
      if left < 0 then redis.call('SREM', holders, other) elseif left > ttl then ttl = left end
    end
  end
  if redis.call('EXPIRE', blob, ttl) == 1 then redis.call('EXPIRE', holders, ttl) end
end
return 1
"""

# KEYS[1] job hash; ARGV[1] job id, ARGV[2] the job-key prefix, ARGV[3] now, then the job's blob keys.
# A finished job lets go of its blobs (each is deleted once no live job holds it), its event stream
# and cancel flag are deleted, and the record keeps `data_deleted_at`. Returns 1 done, 0 the job has
# not finished, -1 no such job.
DELETE_DATA = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return -1 end
if state == 'queued' or state == 'running' then return 0 end
for i = 4, #ARGV do
  local blob, holders = ARGV[i], ARGV[i] .. ':jobs'
  redis.call('SREM', holders, ARGV[1])
  for _, other in ipairs(redis.call('SMEMBERS', holders)) do
    local gone = redis.call('EXISTS', ARGV[2] .. other) == 0 or redis.call('HEXISTS', ARGV[2] .. other, 'data_deleted_at') == 1
    if gone then redis.call('SREM', holders, other) end
  end
  if redis.call('SCARD', holders) == 0 then redis.call('DEL', blob, holders) end
end
redis.call('HSET', KEYS[1], 'data_deleted_at', ARGV[3])
redis.call('DEL', KEYS[1] .. ':events', KEYS[1] .. ':cancel')
return 1
"""
