-- fairvisor.reach: why nginx could not reach the engine, counted per reason in the shared dict.
--
-- Why here and not only in the engine: when the workers may not open the socket (EACCES),
-- the engine never hears from them, so the count the shim reports on its next Hello never
-- arrives. The reasons therefore live in nginx's shared dict (since nginx started, never
-- reset) and the shim serves them itself: appended to the engine's /metrics, and on the
-- /readyz and /metrics it answers while the engine is unreachable (`fairvisor status`).
-- A permission error is explained once per nginx start in error.log, not once a second.

local engines = require "fairvisor.engines"
local fail = require "fairvisor.fail"

local find = string.find
local concat = table.concat

local _M = {}

local REASONS = { "permission_denied", "no_socket", "refused", "timeout", "other" }
local HINT = "nginx workers may not open it: run them as the engine's user or in the socket's group "
    .. "(FAIRVISOR_ENGINE_SOCKET_GROUP / _MODE; docs/operations.md#engine-socket-access)"

local dict

function _M.configure(opts)
    dict = opts.shared_dict and ngx.shared[opts.shared_dict]
end

-- A cosocket error string ("connect: permission denied", ...) -> one of REASONS.
function _M.classify(err)
    err = err or ""
    if find(err, "permission denied", 1, true) then return "permission_denied" end
    if find(err, "no such file", 1, true) then return "no_socket" end
    if find(err, "connection refused", 1, true) then return "refused" end
    if find(err, "timeout", 1, true) or find(err, "timed out", 1, true) then return "timeout" end
    return "other"
end

-- One fail-mode answer: counted by reason. Returns the reason, and whether the caller should
-- still write its own rate-limited log line (not for a permission error, explained once here).
function _M.note(err)
    local reason = _M.classify(err)
    if not dict then return reason, true end
    dict:incr("unreachable:" .. reason, 1, 0)
    if reason ~= "permission_denied" then return reason, true end
    if dict:add("unreachable_logged:" .. reason, true) then
        ngx.log(ngx.ERR, "fairvisor: cannot open the engine socket ", engines.path(), ": permission denied; ", HINT)
    end
    return reason, false
end

-- Prometheus lines for the reasons seen since nginx started ("" when none).
function _M.metrics()
    if not dict then return "" end
    local lines, n = {}, 0
    for i = 1, #REASONS do
        local count = dict:get("unreachable:" .. REASONS[i])
        if count and count > 0 then
            n = n + 1
            lines[n] = 'fairvisor_engine_unreachable_total{reason="' .. REASONS[i] .. '"} ' .. count
        end
    end
    if n == 0 then return "" end
    return "# HELP fairvisor_engine_unreachable_total Fail-mode answers by why nginx could not reach the engine, "
        .. "counted by nginx since it started.\n# TYPE fairvisor_engine_unreachable_total counter\n"
        .. concat(lines, "\n") .. "\n"
end

-- The /readyz body nginx answers while the engine is unreachable: with the cause of this failure.
function _M.health(err)
    local reason = _M.classify(err)
    return fail.not_ready(reason, reason == "permission_denied" and HINT or nil)
end

return _M
