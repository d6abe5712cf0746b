-- fairvisor.fanout: the admin answers that need every engine of the edge (FAIRVISOR_ENGINES > 1).
--
-- With one engine the shim never comes here. With N, the worker's own engine (fairvisor.engines)
-- answers everything except:
--   * /metrics: every engine is scraped and one exposition assembled; each sample gains the
--     label engine="<i>" (a family's HELP and TYPE once, its samples together), and
--     fairvisor_engine_up{engine="<i>"} says which engines answered. Sum over `engine` for the
--     edge (docs/fleet.md, "Engines per edge").
--   * /readyz: ready only when every engine is; otherwise the first engine's answer that is not.
--   * admin writes (POST, PUT, PATCH, DELETE): engine 0 first; when its answer says the change
--     belongs on every engine, the others get it too, under engine 0's ids (pyengine/admin_peers.py);
--     engine 0's refusal goes back as is (nothing was applied), an engine that then did not take
--     it makes the answer a 503 that names it (fairvisor.fail.partial_write_body). Other admin
--     reads (/v1/admin/..., /status) are the worker's own engine's.
-- Assembling bytes is all this does: no answer is judged beyond its HTTP status.

local client = require "fairvisor.client"
local engines = require "fairvisor.engines"
local fail = require "fairvisor.fail"
local proto = require "fairvisor.proto"

local concat = table.concat
local find, gmatch, match, sub = string.find, string.gmatch, string.match, string.sub

local TAG, R = proto.TAG, proto.Reply
local PEERS = "Fairvisor-Peers" -- pyengine/admin_peers.py PEERS_HEADER

local _M = {}

local function ok_reply(reply)
    return reply and reply[TAG] == R.tag
end

-- request (a frame body or a function of the fail-mode counts, as for client.call) to every
-- engine: replies[i + 1], errs[i + 1] for engine i.
function _M.ask_all(request)
    local replies, errs = {}, {}
    for i = 0, engines.count() - 1 do
        replies[i + 1], errs[i + 1] = client.call(request, i)
    end
    return replies, errs
end

-- A sample line with engine="<e>" as its first label.
local function labelled(line, e)
    local name, rest = match(line, "^([%w_:]+)(.*)$")
    if not name then return nil end
    if sub(rest, 1, 1) ~= "{" then return name .. '{engine="' .. e .. '"}' .. rest end
    if sub(rest, 2, 2) == "}" then return name .. '{engine="' .. e .. '"' .. sub(rest, 2) end
    return name .. '{engine="' .. e .. '",' .. sub(rest, 2)
end

-- Engine expositions (bodies[i + 1] for engine i, nil when it did not answer) -> one exposition.
function _M.merge_metrics(bodies)
    local order, families = {}, {}
    local function family(name)
        local f = families[name]
        if not f then
            f = { head = {}, seen = {}, samples = {} }
            families[name] = f
            order[#order + 1] = name
        end
        return f
    end
    local up = family("fairvisor_engine_up")
    up.head[1] = "# HELP fairvisor_engine_up Whether the engine answered this scrape (FAIRVISOR_ENGINES)."
    up.head[2] = "# TYPE fairvisor_engine_up gauge"
    up.seen.HELP, up.seen.TYPE = true, true
    for i = 1, engines.count() do
        local e, body = i - 1, bodies[i]
        up.samples[#up.samples + 1] = 'fairvisor_engine_up{engine="' .. e .. '"} ' .. (body and 1 or 0)
        local current = family("") -- samples before any HELP/TYPE line (none today)
        for line in gmatch(body or "", "[^\n]+") do
            if sub(line, 1, 1) == "#" then
                local kind, name = match(line, "^# (%u+) ([%w_:]+)")
                if kind == "HELP" or kind == "TYPE" then
                    current = family(name)
                    if not current.seen[kind] then
                        current.seen[kind] = true
                        current.head[#current.head + 1] = line
                    end
                end
            else
                local s = labelled(line, e)
                if s then current.samples[#current.samples + 1] = s end
            end
        end
    end
    local out = {}
    for _, name in ipairs(order) do
        local f = families[name]
        for _, line in ipairs(f.head) do out[#out + 1] = line end
        for _, line in ipairs(f.samples) do out[#out + 1] = line end
    end
    return concat(out, "\n") .. "\n"
end

-- /metrics of every engine as one Reply-shaped table { status, content_type, body }; or nil and
-- the first engine Reply that is not a 200 (the admin token's 401), or nil, nil, err when no
-- engine answered at all (the caller answers as for one unreachable engine).
function _M.metrics(request)
    local replies, errs = _M.ask_all(request)
    local bodies, content_type, answered = {}, fail.METRICS_TYPE, false
    for i = 1, engines.count() do
        local r = replies[i]
        if ok_reply(r) then
            if r[R.status] ~= 200 then return nil, r end
            bodies[i], content_type, answered = r[R.body], r[R.content_type], true
        end
    end
    if not answered then return nil, nil, errs[engines.index() + 1] or errs[1] end
    return { status = 200, content_type = content_type, body = _M.merge_metrics(bodies) }
end

-- /readyz: the first answer that is not a ready 200 (reply, err as from client.call), else the
-- worker's own engine's.
function _M.readiness(request)
    local replies, errs = _M.ask_all(request)
    for i = 1, engines.count() do
        local r = replies[i]
        if not ok_reply(r) or r[R.status] ~= 200 then return r, errs[i] or "unexpected reply" end
    end
    return replies[engines.index() + 1]
end

-- Whether engine i > 0 holds the change engine 0 took: it answered with success, or (fleet mode:
-- the store had already brought it there, pyengine/fleet/overlay_sync.py) the record with that
-- id exists (409 "exists") or, for a DELETE, is gone already (404).
local function taken(r, method)
    if not ok_reply(r) then return false end
    local status = r[R.status]
    if status < 400 then return true end
    if method == "POST" and status == 409 then return find(r[R.body] or "", '"reason":"exists"', 1, true) ~= nil end
    return method == "DELETE" and status == 404
end

-- Takes the PEERS header out of a Reply's flat header list; returns its value (nil: absent).
local function take_peers(reply)
    local h = reply[R.headers]
    if not h then return nil end
    for i = 1, #h - 1, 2 do
        if h[i] == PEERS then
            local value = h[i + 1]
            table.remove(h, i)
            table.remove(h, i)
            return value
        end
    end
    return nil
end

-- An admin write (POST, PUT, PATCH, DELETE): make(uri) -> the request for client.call. Engine 0
-- answers first; when its answer says the change belongs on every engine (the PEERS header:
-- the query that keeps its ids, pyengine/admin_peers.py), engines 1.. get the same request with
-- that query. Returns the Reply to send (reply, err as from client.call), or nil, nil, status,
-- body for a change only some engines took.
function _M.write(make, uri, method)
    local first, err = client.call(make(uri), 0)
    if not ok_reply(first) then return first, err end
    local query = take_peers(first)
    if query == nil then return first end
    local others = uri
    if query ~= "" then others = uri .. (find(uri, "?", 1, true) and "&" or "?") .. query end
    local missed = {}
    for i = 1, engines.count() - 1 do
        if not taken(client.call(make(others), i), method) then missed[#missed + 1] = i end
    end
    if #missed == 0 then return first end
    return nil, nil, fail.CLOSED_STATUS, fail.partial_write_body(concat(missed, ", "), engines.count())
end

return _M
