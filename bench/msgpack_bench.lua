-- Micro benchmark: fairvisor.msgpack vs Debian's lua-messagepack on the protocol's hot messages.
-- Run from the repo root: luajit bench/msgpack_bench.lua [iterations]
package.path = "lua-shim/?.lua;/usr/share/lua/5.1/?.lua;" .. package.path
local ours = require "fairvisor.msgpack"
local theirs = require "MessagePack"
theirs.set_string("binary")      -- client bytes travel as bin
theirs.set_array("with_hole")    -- absent headers are nil holes

local N = tonumber(arg[1]) or 1000000
-- No `n` fields: lua-messagepack would encode them as map keys; here no hole is trailing.
local decide = { 2, 7, 0, "POST", "/v1/chat/completions?x=1", "api.example.com", "127.0.0.1",
    { "10.0.0.1", nil, "Bearer eyJhbGciOiJub25lIn0.eyJvcmdfaWQiOiJhY21lIn0.", "key-123" },
    nil, "0123456789abcdef0123456789abcdef" }
local verdict = ours.encode({ 2, 429, { "X-Fairvisor-Reason", "rate_limit_exceeded", "Retry-After", "1",
    "RateLimit", '"per-ip";r=0;t=1', "RateLimit-Policy", '"per-ip";q=10;w=2' },
    '{"type":"https://iana.org/assignments/http-problem-types#quota-exceeded","status":429}', 0 })
assert(theirs.pack(decide) == ours.encode(decide, 10), "encoders disagree")

local function time(label, f)
    for _ = 1, N / 10 do f() end -- warm up the JIT
    local t0 = os.clock()
    for _ = 1, N do f() end
    local us = (os.clock() - t0) / N * 1e6
    print(string.format("%-32s %6.3f us/op", label, us))
    return us
end

local a = time("encode Decide  fairvisor.msgpack", function() return ours.encode(decide, 10) end)
local b = time("encode Decide  lua-messagepack", function() return theirs.pack(decide) end)
local c = time("decode Verdict fairvisor.msgpack", function() return ours.decode(verdict) end)
local d = time("decode Verdict lua-messagepack", function() return theirs.unpack(verdict) end)
print(string.format("speedup: encode %.1fx, decode %.1fx", b / a, d / c))
