-- fairvisor.client: frames to and from the engine over Unix-socket cosockets (docs/protocol.md).
--
-- Decide frames go through the worker's pipe (fairvisor.pipe: batched on one connection);
-- Hello, Settle and the admin messages use pooled connections of their own.
-- Errors come back as `nil, err` with a short string; the caller applies the fail mode.
-- Per worker it caches the engine's HelloReply: which headers to describe, and whether to
-- send the body. Hello goes out again on every new connection (the engine may have restarted)
-- and after any failure (which also reports the fail-mode count promptly).

local engines = require "fairvisor.engines"
local mp = require "fairvisor.msgpack"
local pipe = require "fairvisor.pipe"
local proto = require "fairvisor.proto"

local tcp = ngx.socket.tcp
local var = ngx.var
local get_headers, get_method = ngx.req.get_headers, ngx.req.get_method
local new_tab = require "table.new"

local MAX_HEADERS = 100 -- get_headers() limit; a request with more lines is read again, whole

local PROTOCOL_VERSION, TAG = proto.PROTOCOL_VERSION, proto.TAG
local ERROR_REPLY, HELLO_REPLY, VERDICT = proto.ErrorReply, proto.HelloReply, proto.Verdict
local read_frame, encode_decide = pipe.read_frame, proto.decide
-- A plain Hello (no counts to report; the pipe's own Hello on connect carries those).
local HELLO_FRAME = proto.hello(PROTOCOL_VERSION, 0, 0)

local _M = {}

local cfg = {
    timeout_ms = 100, -- connect, send and each receive (FAIRVISOR_ENGINE_TIMEOUT_MS)
    pool_size = 1024, -- idle connections kept per worker: >= concurrent requests per worker
    dict = nil, -- lua_shared_dict counting fail-mode answers across workers
}

-- The worker's HelloReply: { generation, names = {"x-api-key", ...}, n, needs_body, max_body_bytes }
local hello

function _M.configure(opts)
    engines.configure(opts.socket) -- one path, or FAIRVISOR_ENGINES paths (fairvisor.engines)
    cfg.timeout_ms = opts.timeout_ms or cfg.timeout_ms
    cfg.pool_size = opts.pool_size or cfg.pool_size
    cfg.dict = opts.shared_dict and assert(ngx.shared[opts.shared_dict], "fairvisor: no lua_shared_dict " ..
        opts.shared_dict)
    pipe.configure(cfg.timeout_ms, _M.open_greeted)
end

-- A connection to engine i (0-based; default: this worker's, fairvisor.engines).
local function connect(i)
    local sock = tcp()
    local t = cfg.timeout_ms
    sock:settimeouts(t, t, t)
    local ok, err = sock:connect(engines.target(i))
    if not ok then return nil, "connect: " .. err end
    return sock
end

-- A reply frame body -> the reply array, or nil, err for an undecodable frame or an ErrorReply.
local function decode_reply(data)
    local decoded, reply = pcall(mp.decode, data)
    if not decoded or type(reply) ~= "table" then return nil, "bad reply frame" end
    if reply[TAG] == ERROR_REPLY.tag then
        return nil, "engine error: " .. tostring(reply[ERROR_REPLY.code]) .. ": " .. tostring(reply[ERROR_REPLY.message])
    end
    return reply
end

-- One request frame body out, one reply frame back. On any failure (or an ErrorReply) the
-- cosocket is closed, so it never goes back to the pool.
local function exchange(sock, body)
    local ok, err = sock:send({ mp.u32(#body), body })
    local data
    if ok then data, err = read_frame(sock) end
    if not data then
        sock:close()
        return nil, (ok and "receive: " or "send: ") .. err
    end
    local reply
    reply, err = decode_reply(data)
    if not reply then sock:close() end
    return reply, err
end

-- Fail-mode answers and undeliverable Settles are counted in the shared dict; one worker at
-- a time (holding the "reporting" key) takes the counts, reports them, and subtracts them only
-- once the engine replied.
function _M.count_unavailable()
    local dict = cfg.dict
    if dict then dict:incr("unavailable", 1, 0) end
end

function _M.count_settle_lost()
    local dict = cfg.dict
    if dict then dict:incr("settle_lost", 1, 0) end
end

-- Exchanges encode(unavailable, settle_lost): the message that carries the two counts (Hello,
-- Metrics, Admin), encoded with the counts taken from the shared dict.
local function exchange_reporting(sock, encode)
    local dict, down, lost = cfg.dict, 0, 0
    local locked = dict and ((dict:get("unavailable") or 0) > 0 or (dict:get("settle_lost") or 0) > 0)
        and dict:add("reporting", true, 1 + 3 * cfg.timeout_ms / 1000)
    if locked then
        down, lost = dict:get("unavailable") or 0, dict:get("settle_lost") or 0
    end
    local reply, err = exchange(sock, encode(down, lost))
    if locked then
        if reply then
            dict:incr("unavailable", -down, 0)
            dict:incr("settle_lost", -lost, 0)
        end
        dict:delete("reporting")
    end
    return reply, err
end

-- One exchange on a pooled connection, for the admin endpoints and Settle. request: a frame body
-- (proto.settle(...)), or a function(unavailable, settle_lost) -> body for a message that
-- carries the fail-mode counts (proto.metrics, proto.admin). engine: 0-based index of the
-- engine to ask (fairvisor.fanout); default this worker's own, which Settle always uses.
function _M.call(request, engine)
    local sock, err = connect(engine)
    if not sock then return nil, err end
    if sock:getreusedtimes() == 0 and (engine == nil or engine == engines.index()) then
        hello = nil -- maybe a new engine: decide() says Hello
    end
    local reply
    if type(request) == "function" then
        reply, err = exchange_reporting(sock, request)
    else
        reply, err = exchange(sock, request)
    end
    if reply then sock:setkeepalive(0, cfg.pool_size) end
    return reply, err
end

local function learn(reply)
    local names = reply[HELLO_REPLY.headers]
    hello = { generation = reply[HELLO_REPLY.generation], names = names, n = #names,
        needs_body = reply[HELLO_REPLY.needs_body], max_body_bytes = reply[HELLO_REPLY.max_body_bytes] }
    return hello
end

local function hello_with_counts(down, lost)
    return proto.hello(PROTOCOL_VERSION, down, lost)
end

-- Forget the HelloReply: after a failure the engine may be a new process with a new policy.
function _M.reset()
    hello = nil
end

-- A request answered by the fail mode: forget the HelloReply and count it for the next report.
function _M.failed()
    hello = nil
    _M.count_unavailable()
end

-- The values of the headers the engine asked for, in its order: nil = absent, a string for one
-- line, an array of strings for several lines (in the client's order). The shim never picks one
-- line: the engine joins a list header or refuses the request (pyengine/header_lines.py).
-- One get_headers() call: each ngx.var read is an FFI call that costs about 2-3 us in the
-- interpreted request handler, so reading ten headers one by one cost more than all of them at once.
local function header_values(h)
    local names, n = h.names, h.n
    local values = new_tab(n, 1)
    values.n = n
    if n == 0 then return values end
    local all, truncated = get_headers(MAX_HEADERS)
    if truncated then
        -- Past MAX_HEADERS lines a header (or a second line of one already read) would be unseen:
        -- read them all. nginx's header buffers (large_client_header_buffers) bound the count.
        all = get_headers(0)
    end
    for i = 1, n do
        values[i] = all[names[i]]
    end
    return values
end

-- Hello on a connection of its own (pipe or pool): a new connection may reach a restarted
-- engine, whose policy may ask for other headers. Carries the fail-mode counts.
function _M.say_hello(sock)
    local reply, err = exchange_reporting(sock, hello_with_counts)
    if not reply then return nil, err end
    if reply[TAG] ~= HELLO_REPLY.tag then
        sock:close()
        return nil, "unexpected reply to Hello"
    end
    learn(reply)
    return true
end

-- A new connection that has said Hello (and reported the counts): the pipe's connections.
function _M.open_greeted()
    local sock, err = connect()
    if not sock then return nil, err end
    local ok
    ok, err = _M.say_hello(sock)
    if not ok then return nil, err end
    return sock
end

-- One request frame body -> the reply array: through the worker's pipe (fairvisor.pipe), waiting
-- until `deadline` (ngx.now() seconds) at most, or on a pooled connection of its own in a
-- worker that is shutting down.
local function send_frame(body, deadline)
    if pipe.usable() then
        local left_s = deadline - ngx.now()
        if left_s < 0.001 then return nil, "timeout" end
        local data, err = pipe.call(body, left_s)
        if not data then return nil, err end
        return decode_reply(data)
    end
    local sock, err = connect()
    if not sock then return nil, err end
    if sock:getreusedtimes() == 0 then
        local ok
        ok, err = _M.say_hello(sock)
        if not ok then return nil, err end
    end
    local reply
    reply, err = exchange(sock, body)
    if reply then sock:setkeepalive(0, cfg.pool_size) end
    return reply, err
end

-- Decide for the current request. surface: proto.SURFACE_DESCRIBED (decision service) or
-- proto.SURFACE_INLINE. read_body(max_bytes) -> body, real length (bytes) is called only when the
-- engine asked for the body. Returns the Verdict array (read it with proto.Verdict) or nil, err.
function _M.decide(surface, read_body)
    -- Engine time only is bounded by FAIRVISOR_ENGINE_TIMEOUT_MS (reading a slow client's body
    -- is not): one budget for Hello, one for the Decide and its re-described retry.
    local timeout_s = cfg.timeout_ms / 1000
    local h, reply, err = hello
    if not h then -- first request of this worker, or the first after a failure
        reply, err = send_frame(HELLO_FRAME, ngx.now() + timeout_s)
        if not reply then return nil, err end
        if reply[TAG] ~= HELLO_REPLY.tag then return nil, "unexpected reply to Hello" end
        h = learn(reply)
    end
    local body, body_bytes
    if read_body and h.needs_body then body, body_bytes = read_body(h.max_body_bytes) end
    local deadline = ngx.now() + timeout_s
    -- request_id stays empty: $request_id costs ~10 us per request (OpenSSL RAND_bytes).
    local method, uri, host, addr = get_method(), var.request_uri, var.host, var.remote_addr
    for attempt = 1, 2 do
        reply, err = send_frame(encode_decide(h.generation, surface, method, uri, host, addr, header_values(h),
            body, "", body_bytes), deadline)
        if not reply then return nil, err end
        local tag = reply[TAG]
        if tag == VERDICT.tag then return reply end
        if tag ~= HELLO_REPLY.tag or attempt == 2 then break end
        -- Stale generation: the policy changed what to describe. Describe again, once.
        h = learn(reply)
        if read_body and h.needs_body and not body then
            body, body_bytes = read_body(h.max_body_bytes)
            deadline = ngx.now() + timeout_s
        end
    end
    return nil, "unexpected reply to Decide"
end

return _M
