-- fairvisor.shim: nginx phase entry points; applies the engine's verdicts (no policy logic here).

local client = require "fairvisor.client"
local engines = require "fairvisor.engines"
local fail = require "fairvisor.fail"
local fanout = require "fairvisor.fanout"
local proto = require "fairvisor.proto"
local reach = require "fairvisor.reach"
local response = require "fairvisor.response"

local ngx = ngx
local header = ngx.header
local req = ngx.req
local io_open = io.open
local gmatch = string.gmatch

local _M = {}

local fail_open = true
local last_log = 0 -- ngx.now() of the last "engine unavailable" log line of this worker
local last_settle_log = 0 -- same, for failed settlements

local TAG, V, R = proto.TAG, proto.Verdict, proto.Reply
local DESCRIBED, INLINE = proto.SURFACE_DESCRIBED, proto.SURFACE_INLINE
local DEGRADED, CLOSED_STATUS, CLOSED_HEADERS = fail.DEGRADED, fail.CLOSED_STATUS, fail.CLOSED_HEADERS
local USAGE_MAX_BYTES = 1048576 -- cap on a /v1/usage body

-- opts: socket (path, or the array of FAIRVISOR_ENGINES paths: fairvisor.engines; required),
-- timeout_ms (100), fail_mode ("open"|"closed"), pool_size (1024), shared_dict (name of a
-- lua_shared_dict for the fail-mode count).
function _M.init(opts)
    assert(opts.fail_mode == nil or opts.fail_mode == "open" or opts.fail_mode == "closed",
        "fairvisor: fail_mode must be open or closed")
    fail_open = opts.fail_mode ~= "closed"
    client.configure(opts)
    reach.configure(opts)
end

local function add_headers(h)
    for i = 1, #h, 2 do
        header[h[i]] = h[i + 1]
    end
end

-- Sends a complete response from the access or content phase and ends the request.
local function respond(status, headers, body, content_type)
    ngx.status = status
    header.content_type = content_type -- the engine's headers may override it
    add_headers(headers)
    header.content_length = #body
    ngx.print(body)
    return ngx.exit(status)
end

-- Reads the request body: at most max_bytes of it (from memory, or the temp file nginx spilled
-- it to), and its real length in bytes, so the engine knows when it was cut short.
local function read_body(max_bytes)
    req.read_body()
    local data = req.get_body_data()
    local total
    if data then
        total = #data
    else
        local path = req.get_body_file()
        if not path then return "", 0 end
        local f = io_open(path, "rb")
        if not f then return "", tonumber(ngx.var.content_length) or -1 end
        total = f:seek("end") or -1
        f:seek("set")
        data = f:read(max_bytes) or ""
        f:close()
    end
    if #data > max_bytes then data = data:sub(1, max_bytes) end
    return data, total
end

local function unavailable(err, surface)
    client.failed()
    local _, log_it = reach.note(err)
    local now = ngx.now()
    if log_it and now - last_log >= 1 then -- at most one line per second per worker during an outage
        last_log = now
        ngx.log(ngx.ERR, "fairvisor: engine unavailable (fail mode ", fail_open and "open" or "closed", "): ", err)
    end
    if not fail_open then
        return respond(CLOSED_STATUS, CLOSED_HEADERS, fail.CLOSED_BODY, fail.CLOSED_TYPE)
    end
    if surface == DESCRIBED then
        add_headers(DEGRADED)
        header.content_length = 0
        return ngx.exit(200)
    end
    ngx.ctx.fairvisor_headers = DEGRADED
end

local function throttle(v)
    local delay_ms = v[V.delay_ms]
    if delay_ms and delay_ms > 0 then ngx.sleep(delay_ms / 1000) end -- then allow
end

-- content_by_lua for /v1/decision (surface 0): the request is described by X-Original-* headers;
-- its own body is ignored (contract §2). Allow = 200 with an empty body and the verdict headers.
function _M.decision()
    req.discard_body()
    local v, err = client.decide(DESCRIBED, nil)
    if not v then return unavailable(err, DESCRIBED) end
    local status = v[V.status]
    if status ~= 0 then return respond(status, v[V.headers], v[V.body] or "", "application/problem+json") end
    throttle(v)
    add_headers(v[V.headers])
    header.content_length = 0
    return ngx.exit(200)
end

-- access_by_lua for inline enforcement (surface 1). On allow the verdict headers wait in
-- ngx.ctx for header_filter(), since the response comes later (from the upstream).
function _M.enforce()
    local v, err = client.decide(INLINE, read_body)
    if not v then return unavailable(err, INLINE) end
    local status, headers = v[V.status], v[V.headers]
    if status ~= 0 then return respond(status, headers, v[V.body] or "", "application/json") end
    throttle(v)
    local ctx = ngx.ctx
    if headers[1] then ctx.fairvisor_headers = headers end
    local new_body = v[V.new_body]
    if new_body then -- e.g. the engine asked the provider for usage in the stream
        req.read_body() -- a no-op when the body was read for the engine already
        req.set_body_data(new_body) -- also sets Content-Length
    end
    if response.wanted(v) then ctx.fairvisor_recipe = response.new(v) end
end

-- header_filter_by_lua, paired with enforce().
function _M.header_filter()
    local ctx = ngx.ctx
    local h = ctx.fairvisor_headers
    if h then add_headers(h) end
    local r = ctx.fairvisor_recipe
    if r and response.on_headers(r, ngx.status, header.content_type) then
        header.content_length = nil -- events are dropped or the stream is cut
    end
end

-- body_filter_by_lua, paired with enforce(): SSE counting, dropping and cutoff; Settle bytes.
function _M.body_filter()
    local r = ngx.ctx.fairvisor_recipe
    if not r then return end
    local arg = ngx.arg
    local out, eof = response.filter(r, arg[1], arg[2])
    if out then arg[1] = out end
    if eof then arg[2] = true end
end

local function settle_failed(rid, err)
    client.count_settle_lost() -- reported to the engine once it answers again
    local now = ngx.now()
    if now - last_settle_log >= 1 then -- at most one line per second per worker
        last_settle_log = now
        ngx.log(ngx.ERR, "fairvisor: settle ", rid, " failed: ", err)
    end
end

-- Runs in a timer, so it may use the pooled cosockets (same timeout as Decide). Never raises.
local function settle(_, rid, status, tokens, cut, tail, aborted, chars, sent)
    local reply, err = client.call(proto.settle(rid, status, tokens, cut, tail, aborted, chars, sent))
    if not reply or reply[TAG] ~= R.tag then settle_failed(rid, err or "unexpected reply") end
end

-- Bytes sent to the upstream over all tries ("120, 0" after a retry, "a : b" after an internal
-- redirect); 0 when no upstream was tried. > 0 tells the engine the upstream got the request.
local function upstream_bytes_sent()
    local s = ngx.var.upstream_bytes_sent
    if not s then return 0 end
    local n = 0
    for d in gmatch(s, "%d+") do n = n + tonumber(d) end
    return n
end

-- log_by_lua, paired with enforce(). Cosockets do not exist in this phase: Settle goes out
-- from a zero-delay timer, after the response.
function _M.log()
    local r = ngx.ctx.fairvisor_recipe
    if not r or r.rid == "" or r.settle_bytes <= 0 then return end
    -- The response did not reach its end: the client went away (nginx's 499, or a request that
    -- never completed; once the headers went out, the status stays the upstream's), or the
    -- upstream broke off mid-body (a read timeout or reset: nginx never passed its last buffer).
    local status = ngx.status
    local aborted = status == 499 or ngx.var.request_completion ~= "OK" or (r.status ~= 0 and not r.ended)
    local ok, err = ngx.timer.at(0, settle, r.rid, r.status, r.tokens, r.cut, response.kept(r), aborted, r.chars,
        upstream_bytes_sent())
    if not ok then settle_failed(r.rid, "timer: " .. err) end
end

-- content_by_lua for /v1/debug/session (kind 0) and /v1/debug/logout (kind 1): the engine
-- checks the method and secret and signs or expires the cookie; its answer goes out as is.
function _M.debug(kind)
    req.discard_body()
    local reply, err = client.call(proto.debug_session(kind, req.get_method(), ngx.var.http_x_fairvisor_debug_secret))
    -- The engine answers a Verdict: a status, the Set-Cookie header, a JSON body.
    if not reply or reply[TAG] ~= V.tag then
        ngx.log(ngx.ERR, "fairvisor: debug session: ", err or "unexpected reply")
        return respond(CLOSED_STATUS, CLOSED_HEADERS, fail.CLOSED_BODY, fail.CLOSED_TYPE)
    end
    return respond(reply[V.status], reply[V.headers], reply[V.body] or "", "application/json")
end

-- The content type and body of an admin endpoint's answer while the engine is unreachable.
local function admin_failure(kind, err)
    if kind == "health" then return fail.NOT_READY_TYPE, reach.health(err) end
    if kind == "metrics" then return fail.METRICS_TYPE, fail.METRICS_BODY .. reach.metrics() end
    return fail.CLOSED_TYPE, fail.CLOSED_BODY
end

-- /metrics of every engine (FAIRVISOR_ENGINES > 1), with nginx's own counts; or what to answer
-- instead: an engine's refusal (reply), or nil, err when no engine answered.
local function all_metrics(request)
    local m, refusal, err = fanout.metrics(request)
    if not m then return refusal, err end
    return respond(m.status, {}, m.body .. reach.metrics(), m.content_type)
end

-- content_by_lua for /readyz (kind "health"), /metrics ("metrics") and /v1/usage ("usage").
-- With FAIRVISOR_ENGINES > 1, /readyz and /metrics answer for every engine (fairvisor.fanout).
function _M.admin(kind)
    local reply, err
    local several = engines.count() > 1
    if kind == "health" then
        if several then reply, err = fanout.readiness(proto.health()) else reply, err = client.call(proto.health()) end
    elseif kind == "metrics" then
        if several then reply, err = all_metrics(proto.metrics) else reply, err = client.call(proto.metrics) end
    elseif kind == "usage" then
        reply, err = client.call(proto.usage((read_body(USAGE_MAX_BYTES))))
    else
        error("fairvisor: unknown admin kind " .. tostring(kind))
    end
    if not reply or reply[TAG] ~= R.tag then
        ngx.log(ngx.ERR, "fairvisor: ", kind, ": ", err or "unexpected reply")
        local content_type, body = admin_failure(kind, err)
        return respond(CLOSED_STATUS, CLOSED_HEADERS, body, content_type)
    end
    local body = reply[R.body]
    if kind == "metrics" then body = body .. reach.metrics() end
    local status = reply[R.status]
    ngx.status = status
    header.content_type = reply[R.content_type]
    header.content_length = #body
    ngx.print(body)
    return ngx.exit(status)
end

local ADMIN_BODY_METHODS = { POST = true, PUT = true, PATCH = true, DELETE = true }

-- content_by_lua for every path of the admin listener (nginx/fairvisor-admin.conf): the engine
-- checks FAIRVISOR_ADMIN_TOKEN and routes; the shim only passes the request on.
function _M.admin_route()
    local method = req.get_method()
    local body
    if ADMIN_BODY_METHODS[method] then
        body = read_body(USAGE_MAX_BYTES)
    else
        req.discard_body()
    end
    local auth = req.get_headers(100)["authorization"]
    if type(auth) == "table" then auth = table.concat(auth, ", ") end -- repeated: never a valid token
    local uri = ngx.var.request_uri
    local function make(u)
        return function(down, lost) return proto.admin(u, method, auth, body, down, lost) end
    end
    local request = make(uri)
    -- /metrics carries nginx's own count of why it could not reach the engine (fairvisor.reach).
    local metrics = ngx.var.uri == "/metrics"
    local reply, err
    if engines.count() == 1 then
        reply, err = client.call(request)
    elseif metrics and method == "GET" then
        reply, err = all_metrics(request)
    elseif ngx.var.uri == "/readyz" then
        reply, err = fanout.readiness(request)
    elseif ADMIN_BODY_METHODS[method] then
        local status, partial
        reply, err, status, partial = fanout.write(make, uri, method)
        if partial then return respond(status, CLOSED_HEADERS, partial, fail.CLOSED_TYPE) end
    else
        reply, err = client.call(request)
    end
    if not reply or reply[TAG] ~= R.tag then
        ngx.log(ngx.ERR, "fairvisor: admin: ", err or "unexpected reply")
        local content_type, failure_body = admin_failure(metrics and "metrics" or "health", err)
        return respond(CLOSED_STATUS, CLOSED_HEADERS, failure_body, content_type)
    end
    local status, reply_body = reply[R.status], reply[R.body]
    if metrics and status == 200 then reply_body = reply_body .. reach.metrics() end
    return respond(status, reply[R.headers] or {}, reply_body, reply[R.content_type])
end

return _M
