-- Kong plugin handler for fairvisor: decides each request through the shared shim client (fairvisor.client).
--
-- The engine connection, framing and HelloReply cache are fairvisor.client's, unchanged: this
-- file only maps verdicts onto Kong's PDK. Needs lua-shim/ on Kong's lua_package_path.

local client = require "fairvisor.client"

local ngx = ngx

local FairvisorHandler = {
    PRIORITY = 901, -- after authentication (so jwt:* keys are present) and next to rate-limiting (910)
    VERSION = "0.1.0",
}

local DEGRADED = { "X-Fairvisor-Degraded", "engine_unavailable" }
local CLOSED_HEADERS = { ["Content-Type"] = "application/problem+json", ["X-Fairvisor-Reason"] = "engine_unavailable" }
local CLOSED_BODY = '{"type":"about:blank","title":"Service Unavailable","status":503,'
    .. '"reason":"engine_unavailable","detail":"the policy engine did not answer"}'

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

-- Verdict headers come as a flat { name, value, ... } list.
local function header_map(list, content_type)
    local map = { ["Content-Type"] = content_type }
    for i = 1, #list, 2 do map[list[i]] = list[i + 1] end
    return map
end

function FairvisorHandler:access(conf)
    configure(conf)
    local v, err = client.decide(1, read_body)
    if not v then
        client.reset()
        client.count_unavailable()
        kong.log.err("fairvisor: engine unavailable (fail mode ", conf.fail_mode, "): ", err)
        if conf.fail_mode == "closed" then
            return kong.response.exit(503, CLOSED_BODY, CLOSED_HEADERS)
        end
        -- Fail open: the upstream and the client both learn the request was not checked.
        kong.service.request.set_header(DEGRADED[1], DEGRADED[2])
        kong.ctx.plugin.headers = DEGRADED
        return
    end
    if v[2] ~= 0 then
        return kong.response.exit(v[2], v[4] or "", header_map(v[3], "application/json"))
    end
    local delay_ms = v[5]
    if delay_ms and delay_ms > 0 then ngx.sleep(delay_ms / 1000) end -- throttle, then allow
    if v[3][1] then kong.ctx.plugin.headers = v[3] end
end

function FairvisorHandler:header_filter(conf)
    local h = kong.ctx.plugin.headers
    if not h then return end
    for i = 1, #h, 2 do kong.response.set_header(h[i], h[i + 1]) end
end

return FairvisorHandler
