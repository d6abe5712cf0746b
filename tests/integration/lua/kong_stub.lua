-- A stand-in for the few Kong PDK calls the fairvisor plugin makes, so its handler runs under plain nginx.
-- Not Kong: conf comes from schema.lua's defaults and is checked the way Kong would (one_of, between, match).
local _M = {}

package.preload["kong.db.schema.typedefs"] = function()
    return { protocols_http = { type = "set", elements = { type = "string" }, default = { "http", "https" } } }
end

local function plugin_ctx()
    local ctx = ngx.ctx
    ctx.kong_plugin = ctx.kong_plugin or {}
    return ctx.kong_plugin
end

kong = {
    request = {
        get_raw_body = function()
            ngx.req.read_body()
            return ngx.req.get_body_data()
        end,
    },
    response = {
        exit = function(status, body, headers)
            ngx.status = status
            for name, value in pairs(headers or {}) do ngx.header[name] = value end
            if body then ngx.print(body) end
            return ngx.exit(status)
        end,
        set_header = function(name, value) ngx.header[name] = value end,
    },
    service = { request = { set_header = function(name, value) ngx.req.set_header(name, value) end } },
    log = { err = function(...) ngx.log(ngx.ERR, ...) end },
    ctx = setmetatable({}, { __index = function(_, k) if k == "plugin" then return plugin_ctx() end end }),
}

local function config_fields()
    for _, field in ipairs(require("kong.plugins.fairvisor.schema").fields) do
        if field.config then return field.config.fields end
    end
    error("schema.lua has no config record")
end

local cache = {}

-- The plugin config: schema defaults, then overrides; errors like Kong's on a bad value.
function _M.conf(overrides)
    local parts = {}
    for name, value in pairs(overrides) do parts[#parts + 1] = name .. "=" .. tostring(value) end
    table.sort(parts)
    local key = table.concat(parts, "\0")
    if cache[key] then return cache[key] end
    local conf, known = {}, {}
    for _, entry in ipairs(config_fields()) do
        local name, spec = next(entry)
        known[name] = true
        local value = overrides[name]
        if value == nil then value = spec.default end
        if spec.required and value == nil then error(name .. ": required field missing") end
        if spec.one_of then
            local ok = false
            for _, allowed in ipairs(spec.one_of) do ok = ok or allowed == value end
            if not ok then error(name .. ": expected one of: " .. table.concat(spec.one_of, ", ")) end
        end
        if spec.between and (value < spec.between[1] or value > spec.between[2]) then
            error(name .. ": value should be between " .. spec.between[1] .. " and " .. spec.between[2])
        end
        if spec.match and not tostring(value):find(spec.match) then error(name .. ": invalid value: " .. value) end
        conf[name] = value
    end
    for name in pairs(overrides) do
        if not known[name] then error(name .. ": unknown field") end
    end
    cache[key] = conf
    return conf
end

-- Runs one phase of the handler the way Kong does: handler:phase(conf).
function _M.run(phase, overrides)
    local handler = require "kong.plugins.fairvisor.handler"
    return handler[phase](handler, _M.conf(overrides))
end

return _M
