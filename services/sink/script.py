"""The Lua script that applies one match event to a store's statistics (see :mod:`.store`).

Redis runs a script atomically, so a visit is never half-recorded, and the event id check plus
the writes cannot interleave with another sink applying the same event after a rebalance.

KEYS (all carry the store's hash tag, so they live on one Redis Cluster slot):
  1 seen key of the event id    2 the person's visits (zset)    3 the person's key index (set)
  4 day counters (hash)         5 day UV set                    6 day members set
  7 the store's member arrivals stream                          8 the person's erasure marker
ARGV:
  1 event time (ms)   2 visit gap (ms)   3 local day (YYYY-MM-DD)   4 local day start (ms)
  5 person   6 member id or ""   7 camera   8 event id   9 dedup TTL (s)   10 history TTL (s)
  11 counters TTL (s, 0 = none)   12 arrivals cap   13 day key base (day hash = base .. day)

Returns ``{status, visit_started}``; status 1 = applied, 0 = event id already applied,
-1 = suppressed: the person was erased after this event was captured (a backlog event must
not bring an erased person back).

The script builds one key itself: the day hash of the visit an event joins, which is the day
that visit started on and may differ from the event's own day (a visit across midnight). It is
built from the declared day key base, so it has the same hash tag and the same slot.
"""

from __future__ import annotations

from typing import Final

APPLY_LUA: Final = r"""
local seen, visits, index = KEYS[1], KEYS[2], KEYS[3]
local day_hash, day_uv, day_members, arrivals, erased = KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local t, gap = tonumber(ARGV[1]), tonumber(ARGV[2])
local day, day_start = ARGV[3], tonumber(ARGV[4])
local person, member, camera, event_id = ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local dedup_ttl, history_ttl, stats_ttl = tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11])
local maxlen, day_base = ARGV[12], ARGV[13]

-- At most once per event id. The marker is written last: a script that failed half-way
-- (a bug) leaves no marker, so the runner's retry is visible instead of a silent loss.
if redis.call('EXISTS', seen) == 1 then
  return {0, 0}
end
local erased_at = redis.call('GET', erased)
if erased_at and t <= tonumber(erased_at) then
  return {-1, 0}
end

-- Event times are integer milliseconds; format them without an exponent.
local function int(x) return string.format('%.0f', x) end
-- A visit is one zset member "start|end|local day it started|events", scored by its start.
local function visit(s, e, d, n) return int(s) .. '|' .. int(e) .. '|' .. d .. '|' .. int(n) end
local function keep_stats(key)
  if stats_ttl > 0 then redis.call('EXPIRE', key, stats_ttl) end
end

-- The only visit t can belong to: the latest one starting no later than t + gap. Visits are
-- more than a gap apart, so an event within a gap of its span joins it, even out of order.
local started = 1
local found = redis.call('ZRANGE', visits, int(t + gap), '-inf', 'BYSCORE', 'REV', 'LIMIT', 0, 1)
if #found == 1 then
  local s, e, d, n = string.match(found[1], '^(%d+)|(%d+)|([^|]+)|(%d+)$')
  s, e, n = tonumber(s), tonumber(e), tonumber(n)
  if t <= e + gap then
    started = 0
    local ns, ne = math.min(s, t), math.max(e, t)
    redis.call('ZREM', visits, found[1])
    redis.call('ZADD', visits, int(ns), visit(ns, ne, d, n + 1))
    -- Dwell belongs to the day the visit started on; add only what this event lengthened.
    local visit_day = day_base .. d
    local grown = (ne - ns) - (e - s)
    if grown > 0 then redis.call('HINCRBY', visit_day, 'dwell_ms', int(grown)) end
    -- A visit's dwell is measured once it has two events (see store.py's definitions).
    if n == 1 then redis.call('HINCRBY', visit_day, 'dwell_visits', 1) end
    keep_stats(visit_day)
  end
end

if started == 1 then
  redis.call('ZADD', visits, int(t), visit(t, t, day, 1))
  redis.call('HINCRBY', day_hash, 'pv', 1)
  if redis.call('SADD', day_uv, person) == 1 then
    redis.call('HINCRBY', day_hash, 'uv', 1)
    -- Returning: a visit to this store that started before this local day.
    if redis.call('ZCOUNT', visits, '-inf', '(' .. int(day_start)) > 0 then
      redis.call('HINCRBY', day_hash, 'returning', 1)
    else
      redis.call('HINCRBY', day_hash, 'new', 1)
    end
    redis.call('EXPIRE', day_uv, history_ttl)
    redis.call('SADD', index, day_uv)
  end
  if member ~= '' then
    redis.call('SADD', day_members, member)
    redis.call('EXPIRE', day_members, history_ttl)
    redis.call('SADD', index, day_members)
    redis.call('XADD', arrivals, 'MAXLEN', '~', maxlen, '*', 'member_id', member,
      'camera_id', camera, 'at_ms', int(t), 'event_id', event_id)
    redis.call('EXPIRE', arrivals, history_ttl)
  end
  keep_stats(day_hash)
end

-- Identity-bearing data lives only as long as the history retention, counted in event time
-- for the visit list and from the last write for the keys.
redis.call('ZREMRANGEBYSCORE', visits, '-inf', '(' .. int(t - history_ttl * 1000))
redis.call('EXPIRE', visits, history_ttl)
if redis.call('EXISTS', index) == 1 then redis.call('EXPIRE', index, history_ttl) end
redis.call('SET', seen, '1', 'EX', dedup_ttl)
return {1, started}
"""
