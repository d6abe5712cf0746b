-- Checks fairvisor.proto (generated) against frames made by the Python encoder.
-- Usage: luajit check_proto.lua CASES.lua; CASES.lua returns a list of
--   {direction="request", encoder=, args={n=, ...}, frame=}: proto[encoder](args...) must give the frame's body;
--   {direction="response", message=, names={...}, values={n=, ...}, frame=}: in the decoded frame, field
--     names[i] must be found at proto[message][names[i]] and equal values[i].
-- Prints "ok N" and exits 0, or prints each failure and exits 1.
local cases = dofile(arg[1])
local mp = require "fairvisor.msgpack"
local proto = require "fairvisor.proto"

local function hex(s)
    return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

-- Deep equality; `want` arrays carry their length in `n` (they may hold nils).
local function same(want, got)
    if type(want) ~= "table" then return want == got end
    if type(got) ~= "table" then return false end
    for i = 1, want.n do
        if not same(want[i], got[i]) then return false end
    end
    return got[want.n + 1] == nil
end

local failures, count = 0, 0
local function fail(name, err)
    failures = failures + 1
    print("FAIL " .. name .. ": " .. err)
end

for _, c in ipairs(cases) do
    count = count + 1
    if c.direction == "request" then
        local encoder = proto[c.encoder]
        if type(encoder) ~= "function" then
            fail(c.name, "no encoder proto." .. c.encoder)
        else
            local body = encoder(unpack(c.args, 1, c.args.n))
            local frame = mp.u32(#body) .. body
            if frame ~= c.frame then fail(c.name, "encoded " .. hex(frame) .. "\n   want " .. hex(c.frame)) end
        end
    else
        local t, v = proto[c.message], mp.decode(c.frame:sub(5))
        if type(t) ~= "table" then
            fail(c.name, "no table proto." .. c.message)
        elseif v[1] ~= t.tag then
            fail(c.name, "tag " .. tostring(v[1]) .. " ~= proto." .. c.message .. ".tag " .. tostring(t.tag))
        else
            for i, name in ipairs(c.names) do
                if not t[name] or not same(c.values[i], v[t[name]]) then
                    fail(c.name, "field " .. name .. " not at proto." .. c.message .. "." .. name)
                end
            end
        end
    end
end

if failures > 0 then os.exit(1) end
print("ok " .. count)
