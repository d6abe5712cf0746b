-- fairvisor.fail: what nginx answers on its own when the engine cannot (contract: fail modes).
--
-- The one place for these bytes: the shim's locations (fairvisor.shim) and the Kong plugin
-- answer with the same headers and bodies, and `fairvisor selftest` and the fail-mode tests
-- read them back.

local _M = {}

-- Fail open: the request goes on, and the client (and the upstream, where the gateway lets the
-- shim set a request header) learn it was not checked.
_M.DEGRADED = { "X-Fairvisor-Degraded", "engine_unavailable" }

-- Fail closed, and every endpoint that needs the engine (debug session, /v1/usage, admin).
_M.CLOSED_STATUS = 503
_M.CLOSED_HEADERS = { "X-Fairvisor-Reason", "engine_unavailable" }
_M.CLOSED_TYPE = "application/problem+json"
_M.CLOSED_BODY = '{"type":"about:blank","title":"Service Unavailable","status":503,'
    .. '"reason":"engine_unavailable","detail":"the policy engine did not answer"}'

-- An admin write (FAIRVISOR_ENGINES > 1) that engine 0 took but engines `missed` ("1, 3") did not.
function _M.partial_write_body(missed, count)
    return '{"type":"about:blank","title":"Service Unavailable","status":503,"reason":"engine_unavailable",'
        .. '"detail":"engine ' .. missed .. ' of ' .. count .. ' did not take the change (the others did): '
        .. 'send it again once every engine is ready"}'
end

-- /metrics while the engine is unreachable (nginx's own counts are appended: fairvisor.reach).
_M.METRICS_TYPE = "text/plain"
_M.METRICS_BODY = "# fairvisor engine unavailable\n"

-- /readyz while the engine is unreachable: the cause (fairvisor.reach.classify) and a hint.
_M.NOT_READY_TYPE = "application/json"

function _M.not_ready(cause, detail)
    local body = '{"status":"not_ready","reason":"engine_unavailable","cause":"' .. cause .. '"'
    if detail then body = body .. ',"detail":"' .. detail .. '"' end
    return body .. "}"
end

return _M
