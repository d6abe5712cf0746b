-- Strict rules' atomic acquire (contract §9). pyengine/fleet/strict.py calls it and owns its wire:
--
-- KEYS[i]  the remote key of op i: a HASH whose field "v" is the msgpack of the engine's own
--          local value (a float TAT for GCRA, [period_end_s, used] for period counters).
-- ARGV[1]  now, UTC epoch seconds (the engine's clock); ARGV[2] expiry slack, ms;
--          then five per op: kind, a, b, c, cost.
--   "g"  GCRA acquire (token bucket, TPM): a = rate per s, b = burst, c = tolerance in tokens.
--   "c"  period counter acquire (cost budget, TPD): a = period end s, b = highest spend after it.
--   "G", "C"  the inverse of "g", "c" (a refund of cost, unchecked): compensation for a group
--        that another hash slot refused.
-- The arithmetic is pyengine/algorithms/token_bucket.py's and cost_based.py's, operation for
-- operation (doubles both sides), so the engine's replay of its own limiter agrees exactly.
--
-- Every acquire is checked before anything is written: all commit, or none.
-- Reply: {0, v1, ..., vn} committed, vi being the raw value found before op i (false when
-- absent; for refunds, the value after); or {i, v1, ..., vi} when op i refused (nothing written).

local now = tonumber(ARGV[1])
local slack_ms = tonumber(ARGV[2])
local n = #KEYS
local found, new, expiry = {}, {}, {}
local SNAP = 6755399441055744.0 -- 1.5 * 2^52: adding and subtracting it rounds to an integer

local function tokens_at(tat, rate, burst, eps)
  if tat == nil or tat <= now then return burst end
  local tokens = burst - (tat - now) * rate
  local whole = (tokens + SNAP) - SNAP
  local off = tokens - whole
  if -eps < off and off < eps then return whole end
  return tokens
end

local function f64(x) -- msgpack float 64, the encoding of a Python float
  return "\203" .. struct.pack(">d", x)
end

for i = 1, n do
  local j = 2 + (i - 1) * 5
  local kind = ARGV[j + 1]
  local a, b, c, cost = tonumber(ARGV[j + 2]), tonumber(ARGV[j + 3]), tonumber(ARGV[j + 4]), tonumber(ARGV[j + 5])
  local raw = redis.call("HGET", KEYS[i], "v")
  local value = nil
  if raw then value = cmsgpack.unpack(raw) end
  found[i] = raw or false
  if kind == "g" then
    local after = tokens_at(value, a, b, c) - cost
    if after <= -c then
      return {i, unpack(found, 1, i)}
    end
    local tat = now + (b - after) / a
    new[i], expiry[i] = f64(tat), tat
  elseif kind == "c" then
    local spent = 0
    if type(value) == "table" and value[1] == a then spent = value[2] end
    local after = spent + cost
    if after > b then
      return {i, unpack(found, 1, i)}
    end
    new[i], expiry[i] = cmsgpack.pack({a, after}), a
  elseif kind == "G" then
    local tokens = tokens_at(value, a, b, c) + cost
    if tokens > b then tokens = b end
    local tat = now + (b - tokens) / a
    if tat < now then tat = now end
    new[i], expiry[i] = f64(tat), tat
    found[i] = new[i]
  elseif kind == "C" then
    if type(value) == "table" and value[1] == a then
      local spent = value[2] - cost
      if spent < 0 then spent = 0 end
      new[i], expiry[i] = cmsgpack.pack({a, spent}), a
      found[i] = new[i]
    end
  else
    return redis.error_reply("strict.lua: unknown op kind " .. tostring(kind))
  end
end

for i = 1, n do
  if new[i] then
    redis.call("HSET", KEYS[i], "v", new[i])
    redis.call("PEXPIREAT", KEYS[i], math.ceil(expiry[i] * 1000) + slack_ms)
  end
end
return {0, unpack(found, 1, n)}
