"""The Lua script that applies a store's match events to its statistics (see :mod:`.store`).

One call applies, in order, the events of one store from one batch. Redis runs a script
atomically, so a store's part of a batch is recorded whole or not at all, and the duplicate
checks plus the writes cannot interleave with another sink applying the same events after a
rebalance.

Exactly once, without a key per event:

1. **Kafka position.** ``matches.v1`` is keyed by store, so one store's records come from one
   partition, in offset order. The script keeps, in the store's ``offsets`` hash, the highest
   offset it applied of each ``topic:partition`` and skips a record at or below it: a
   redelivery (a crash or a rebalance before the commit). The mark is written in the same call
   as the visit update, so the two cannot disagree. Per (store, partition): after a change of
   the partition count, a store's old records (old partition) and new ones (new partition) are
   each checked against their own partition's mark.
2. **Event id, bounded.** The same event can also come back at a *new* offset: a matcher that
   handles a batch again re-publishes its events (same ids, derived from the observation). The
   store's ``recent`` sorted set holds the ids of its last ``window`` events (score: the
   store's event count), so a copy published within that many of the store's events after the
   original is dropped. ``legacy`` also honours the per-event ``seen:`` keys of earlier sinks
   while they last (they expire by themselves).

KEYS (all carry the store's hash tag, so they live on one Redis Cluster slot):
  1 the store's offsets (hash)   2 the store's recent event ids (zset)
  3 the store's member arrivals stream
  then 7 per event: 1 legacy seen key of the event id   2 the person's visits (zset)
  3 the person's key index (set)   4 day counters (hash)   5 day UV set   6 day members set
  7 the person's erasure marker
ARGV:
  1 visit gap (ms)   2 dedup TTL (s)   3 history TTL (s)   4 counters TTL (s, 0 = none)
  5 arrivals cap   6 day key base (day hash = base .. day)   7 window (event ids kept)
  8 "1" to honour legacy seen keys
  then 10 per event: 1 event time (ms)   2 local day (YYYY-MM-DD)   3 local day start (ms)
  4 person   5 member id or ""   6 camera   7 event id   8 "topic:partition" or "" (no Kafka
  position)   9 offset   10 end of the event's span (ms; the event time unless the event is a
  pass through a video camera's view, seen until then)

Returns ``{status, visit_started}`` per event, flattened; status 1 = applied, 0 = duplicate (the
event id was applied), -1 = suppressed: the person was erased after this event was captured (a
backlog event must not bring an erased person back), -2 = redelivered (at or below its
partition's applied offset).

The script builds one kind of key itself: the day hash of the visit an event joins, which is the
day that visit started on and may differ from the event's own day (a visit across midnight), and
the day hash of a later day whose *new* visitor an out-of-order event turns *returning*. They
are built from the declared day key base, so they have the same hash tag and the same slot.
"""

from __future__ import annotations

from typing import Final

KEYS_PER_EVENT: Final = 7
ARGS_PER_EVENT: Final = 10

APPLY_LUA: Final = r"""
local offsets, recent, arrivals = KEYS[1], KEYS[2], KEYS[3]
local gap, dedup_ttl = tonumber(ARGV[1]), tonumber(ARGV[2])
local history_ttl, stats_ttl = tonumber(ARGV[3]), tonumber(ARGV[4])
local maxlen, day_base, window, legacy = ARGV[5], ARGV[6], tonumber(ARGV[7]), ARGV[8] == '1'

-- Event times are integer milliseconds; format them without an exponent.
local function int(x) return string.format('%.0f', x) end
-- A visit is one zset member "start|end|local day it started|events", scored by its start.
local function visit(s, e, d, n) return int(s) .. '|' .. int(e) .. '|' .. d .. '|' .. int(n) end
local function keep_stats(key)
  if stats_ttl > 0 then redis.call('EXPIRE', key, stats_ttl) end
end

local function record(event_id, visits, index, day_hash, day_uv, day_members, t, u, day,
                      day_start, person, member, camera)
  -- The event spans t..u (u = t but for a pass through a video camera's view). The only visit
  -- it can belong to: the latest one starting no later than t + gap. Visits are more than a
  -- gap apart, so an event within a gap of its span joins it, even out of order.
  local started = 1
  local found = redis.call('ZRANGE', visits, int(t + gap), '-inf', 'BYSCORE', 'REV', 'LIMIT', 0, 1)
  if #found == 1 then
    local s, e, d, n = string.match(found[1], '^(%d+)|(%d+)|([^|]+)|(%d+)$')
    s, e, n = tonumber(s), tonumber(e), tonumber(n)
    if t <= e + gap then
      started = 0
      local ns, ne = math.min(s, t), math.max(e, u)
      redis.call('ZREM', visits, found[1])
      redis.call('ZADD', visits, int(ns), visit(ns, ne, d, n + 1))
      -- Dwell belongs to the day the visit started on; add only what this event lengthened.
      local visit_day = day_base .. d
      local grown = (ne - ns) - (e - s)
      if grown > 0 then redis.call('HINCRBY', visit_day, 'dwell_ms', int(grown)) end
      -- A visit's dwell is measured once it has two events or a span (store.py's definitions);
      -- one that started with a span was counted then.
      if n == 1 and e == s then redis.call('HINCRBY', visit_day, 'dwell_visits', 1) end
      keep_stats(visit_day)
    end
  end

  if started == 1 then
    redis.call('ZADD', visits, int(t), visit(t, u, day, 1))
    redis.call('HINCRBY', day_hash, 'pv', 1)
    if u > t then
      redis.call('HINCRBY', day_hash, 'dwell_ms', int(u - t))
      redis.call('HINCRBY', day_hash, 'dwell_visits', 1)
    end
    if redis.call('SADD', day_uv, person) == 1 then
      redis.call('HINCRBY', day_hash, 'uv', 1)
      -- Returning: a visit to this store that started before this local day.
      if redis.call('ZCOUNT', visits, '-inf', '(' .. int(day_start)) > 0 then
        redis.call('HINCRBY', day_hash, 'returning', 1)
      else
        redis.call('HINCRBY', day_hash, 'new', 1)
        -- A store's events can arrive out of event-time order across days (its cameras' frames
        -- go through different detectors; a backlog): a later day that counted this person new
        -- now has an earlier visit, so there they are returning. Only their next visit's day
        -- can have counted them new (no visit precedes this one, none other is on this day).
        local later = redis.call('ZRANGE', visits, '(' .. int(t), '+inf', 'BYSCORE', 'LIMIT', 0, 1)
        local d2 = #later == 1 and string.match(later[1], '^%d+|%d+|([^|]+)|%d+$')
        if d2 and d2 ~= day then
          local later_day = day_base .. d2
          redis.call('HINCRBY', later_day, 'new', -1)
          redis.call('HINCRBY', later_day, 'returning', 1)
          keep_stats(later_day)
        end
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
  return started
end

local out = {}
local events = (#KEYS - 3) / 7
for i = 0, events - 1 do
  local k, a = 3 + i * 7, 8 + i * 10
  local seen, visits, index = KEYS[k + 1], KEYS[k + 2], KEYS[k + 3]
  local day_hash, day_uv, day_members, erased = KEYS[k + 4], KEYS[k + 5], KEYS[k + 6], KEYS[k + 7]
  local t, day, day_start = tonumber(ARGV[a + 1]), ARGV[a + 2], tonumber(ARGV[a + 3])
  local person, member, camera, event_id = ARGV[a + 4], ARGV[a + 5], ARGV[a + 6], ARGV[a + 7]
  local position, offset = ARGV[a + 8], tonumber(ARGV[a + 9])
  local u = math.max(t, tonumber(ARGV[a + 10]))

  local status, started = 1, 0
  local mark = position ~= '' and redis.call('HGET', offsets, position)
  if mark and offset <= tonumber(mark) then
    status = -2
  elseif redis.call('ZSCORE', recent, event_id) or (legacy and redis.call('EXISTS', seen) == 1) then
    status = 0
  else
    local erased_at = redis.call('GET', erased)
    if erased_at and t <= tonumber(erased_at) then
      status = -1
    else
      started = record(event_id, visits, index, day_hash, day_uv, day_members, t, u, day,
                       day_start, person, member, camera)
      -- Remembered last: a script that failed half-way (a bug) leaves no trace of the event,
      -- so the runner's retry is visible instead of a silent loss.
      local n = redis.call('HINCRBY', offsets, 'events', 1)
      redis.call('ZADD', recent, n, event_id)
      local size = redis.call('ZCARD', recent)
      if size > window then redis.call('ZREMRANGEBYRANK', recent, 0, size - window - 1) end
    end
  end
  -- Every record handled (applied, a copy or suppressed) moves its partition's mark.
  if status ~= -2 and position ~= '' then redis.call('HSET', offsets, position, int(offset)) end
  out[#out + 1] = status
  out[#out + 1] = started
end
if redis.call('EXISTS', offsets) == 1 then redis.call('EXPIRE', offsets, dedup_ttl) end
if redis.call('EXISTS', recent) == 1 then redis.call('EXPIRE', recent, dedup_ttl) end
return out
"""
