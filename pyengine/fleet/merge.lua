-- Applies one engine's deltas to shared state values, each exactly once (pyengine/fleet/kinds.py
-- is the same rule in Python and documents the kinds; pyengine/fleet/sync.py calls this).
-- KEYS[i]  value i's HASH (pyengine/fleet/keyspace.py): field v = msgpack value,
--          field s:<engine> = the last sync sequence number of that engine applied here
-- ARGV     engine id, sequence number, now (UTC epoch s), slack_s, then delta i (msgpack) per key
-- Returns the merged values (msgpack), in KEYS order, also where this sequence number was
-- applied already. On a Redis Cluster every key of one call is in one hash slot (sync.py).
local engine = ARGV[1]
local seq_field = 's:' .. engine
local seq, now, slack = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])

local function merge(key, delta)
local raw = redis.call('HGET', key, 'v')
local last = tonumber(redis.call('HGET', key, seq_field) or '0')
if seq <= last and raw then
  return raw
end
local d = cmsgpack.unpack(delta)
local kind = d[1]
local v = false
if raw then v = cmsgpack.unpack(raw) end
local expiry

if kind == 'G' then
  local base = now
  if v and v > now then base = v end
  v = base + d[2]
  if v < now then v = now end
  expiry = v
elseif kind == 'P' then
  local stop, added = d[2], d[3]
  local n
  if not v or v[1] < stop then n = added
  elseif v[1] == stop then n = v[2] + added
  else n = nil end
  if n ~= nil then
    if n < 0 then n = 0 end
    v = {stop, n}
  end
  expiry = v[1]
elseif kind == 'S' or kind == 'W' then
  local retain = d[2]
  local kept = {}
  if v then
    for _, m in ipairs(v[2]) do
      if m[1] + retain > now then kept[#kept + 1] = m end
    end
  end
  for _, t in ipairs(d[3]) do kept[#kept + 1] = {t, engine} end
  for _, t in ipairs(d[4]) do
    for i, m in ipairs(kept) do
      if m[1] == t and m[2] == engine then table.remove(kept, i); break end
    end
  end
  table.sort(kept, function(a, b)
    if a[1] ~= b[1] then return a[1] < b[1] end
    return a[2] < b[2]
  end)
  v = {retain, kept}
  expiry = 0
  if #kept > 0 then expiry = kept[#kept][1] + retain end
else -- 'B': {expiry, state, since, bucket_start, prev, cur}; d = {B, start, dprev, dcur, open_since, expiry}
  local start, dprev, dcur, open_since = d[2], d[3], d[4], d[5]
  local window = 60
  if not v or v[1] <= now then v = {0, 0, now, start, 0, 0} end
  if v[4] == start - window then v[5], v[6] = v[6], 0
  elseif v[4] < start - window then v[5], v[6] = 0, 0
  elseif v[4] == start + window then dprev, dcur = dcur, 0; start = v[4]
  elseif v[4] ~= start then dprev, dcur = 0, 0; start = v[4] end
  v[4] = start
  if open_since >= 0 and (v[2] ~= 1 or open_since > v[3]) then
    v[2], v[3], v[5], v[6] = 1, open_since, 0, 0
  end
  v[5] = math.max(0, v[5] + dprev)
  v[6] = math.max(0, v[6] + dcur)
  if d[6] > v[1] then v[1] = d[6] end
  expiry = v[1]
end

local packed = cmsgpack.pack(v)
redis.call('HSET', key, 'v', packed, seq_field, seq)
redis.call('PEXPIREAT', key, math.floor((math.max(expiry, now) + slack) * 1000))
return packed
end

local out = {}
for i, key in ipairs(KEYS) do
  out[i] = merge(key, ARGV[4 + i])
end
return out
