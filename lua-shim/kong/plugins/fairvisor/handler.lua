-- Kong plugin handler for fairvisor: decides each request through the shared shim client (fairvisor.client).
--
-- The engine connection, framing and HelloReply cache are fairvisor.client's, unchanged: this
-- file only maps verdicts onto Kong's PDK. Needs lua-shim/ on Kong's lua_package_path.

local client = require "fairvisor.client"
local fail = require "fairvisor.fail"
local proto = require "fairvisor.proto"

local ngx = ngx
local V = proto.Verdict

local FairvisorHandler = {
    PRIORITY = 901, -- after authentication (so jwt:* keys are present) and next to rate-limiting (910)
    VERSION = "0.1.0",
}

local DEGRADED = fail.DEGRADED

-- fairvisor.client keeps one configuration per worker: set it when the plugin config changes.
local configured

local function configure(conf)
    if configured == conf then return end
    client.configure({
        socket = conf.socket,
        timeout_ms = conf.timeout_ms,
        pool_size = 1024, -- >= concurrent requests per worker
        shared_dict = ngx.shared.fairvisor and "fairvisor" or nil, -- nginx_http_lua_shared_dict = fairvisor 1m
    })
    configured = conf
end

-- The body, for LLM rules; Kong returns nil when it was buffered to a file (too large to keep).
local function read_body(max_bytes)
    local body = kong.request.get_raw_body() or ""
    if #body > max_bytes then body = body:sub(1, max_bytes) end
    return body
end

-- Verdict (and fail-mode) headers come as a flat { name, value, ... } list.
local function header_map(list, content_type)
    local map = { ["Content-Type"] = content_type }
    for i = 1, #list, 2 do map[list[i]] = list[i + 1] end
    return map
end

function FairvisorHandler:access(conf)
    configure(conf)
    local v, err = client.decide(proto.SURFACE_INLINE, read_body)
    if not v then
        client.failed()
        kong.log.err("fairvisor: engine unavailable (fail mode ", conf.fail_mode, "): ", err)
        if conf.fail_mode == "closed" then
            return kong.response.exit(fail.CLOSED_STATUS, fail.CLOSED_BODY,
                header_map(fail.CLOSED_HEADERS, fail.CLOSED_TYPE))
        end
        -- Fail open: the upstream and the client both learn the request was not checked.
        kong.service.request.set_header(DEGRADED[1], DEGRADED[2])
        kong.ctx.plugin.headers = DEGRADED
        return
    end
    local status, headers = v[V.status], v[V.headers]
    if status ~= 0 then
        return kong.response.exit(status, v[V.body] or "", header_map(headers, "application/json"))
    end
    local delay_ms = v[V.delay_ms]
    if delay_ms and delay_ms > 0 then ngx.sleep(delay_ms / 1000) end -- throttle, then allow
    if headers[1] then kong.ctx.plugin.headers = headers end
end

function FairvisorHandler:header_filter(conf)
    local h = kong.ctx.plugin.headers
    if not h then return end
    for i = 1, #h, 2 do kong.response.set_header(h[i], h[i + 1]) end
end

return FairvisorHandler
