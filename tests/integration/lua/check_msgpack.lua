-- Checks fairvisor.msgpack against frames made by the Python encoder.
-- Usage: luajit check_msgpack.lua CASES.lua  (CASES.lua returns {{name=, direction=, fields=, frame=}, ...},
-- written by test_lua_msgpack.py). Prints "ok N" and exits 0, or prints each failure and exits 1.
local cases = dofile(arg[1])
local mp = require "fairvisor.msgpack"

local function hex(s)
    return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

-- Deep equality; `want` arrays carry their length in `n` (they may hold nils).
local function same(want, got, path)
    if type(want) ~= "table" then
        if want ~= want and got ~= got then return true end -- NaN
        if want == got then return true end
        return nil, string.format("%s: want %s, got %s", path, tostring(want), tostring(got))
    end
    if type(got) ~= "table" then return nil, path .. ": want a table, got " .. tostring(got) end
    if want.map then
        for k, v in pairs(want.map) do
            local ok, err = same(v, got[k], path .. "." .. tostring(k))
            if not ok then return nil, err end
        end
        return true
    end
    for i = 1, want.n do
        local ok, err = same(want[i], got[i], path .. "[" .. i .. "]")
        if not ok then return nil, err end
    end
    if got[want.n + 1] ~= nil then return nil, path .. ": more items than expected" end
    return true
end

local failures, count = 0, 0
for _, c in ipairs(cases) do
    count = count + 1
    local body = c.frame:sub(5)
    local ok, err
    if c.direction == "request" then
        local mine = mp.encode(c.fields)
        local frame = mp.u32(#mine) .. mine
        ok = frame == c.frame
        if not ok then err = "encoded " .. hex(frame) .. "\n   want " .. hex(c.frame) end
    else
        local decoded_ok, value = pcall(mp.decode, body)
        if decoded_ok then
            ok, err = same(c.fields, value, c.name)
        else
            err = "decode raised: " .. tostring(value)
        end
    end
    if not ok then
        failures = failures + 1
        print("FAIL " .. c.name .. ": " .. err)
    end
end

-- Malformed input must raise (the shim pcalls decode and applies the fail mode).
for _, bad in ipairs({ "", "\147\1", "\217\9abc", "\1\2", "\193" }) do
    count = count + 1
    if pcall(mp.decode, bad) then
        failures = failures + 1
        print("FAIL: decoding " .. hex(bad) .. " did not raise")
    end
end

if failures > 0 then os.exit(1) end
print("ok " .. count)
