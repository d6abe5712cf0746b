-- fairvisor.engines: the engine sockets of this edge, and which one this nginx worker talks to.
--
-- `fairvisor run` with FAIRVISOR_ENGINES=N starts N engine processes and writes their sockets
-- into the config (cli/nginx_conf.py; names from pyengine/engine_paths.py). Each worker talks to
-- engine ngx.worker.id() % N for everything it decides and settles, so a Settle reaches the
-- engine that made the reservation. This is the only place that choice is made; the admin
-- endpoints that need every engine's answer ask them all (fairvisor.fanout).

local _M = {}

local targets = {} -- "unix:<path>" of every engine, engine 0 first
local paths = {}
local n = 0
local mine -- this worker's engine (0-based), chosen at its first use in the worker

-- socket: one path, or an array of paths (engine 0 first).
function _M.configure(socket)
    assert(socket, "fairvisor: socket is required")
    paths = type(socket) == "table" and socket or { socket }
    n = #paths
    assert(n > 0, "fairvisor: socket is required")
    targets = {}
    for i = 1, n do targets[i] = "unix:" .. paths[i] end
    mine = nil
end

function _M.count()
    return n
end

-- This worker's engine, 0-based. Outside a worker (the init phase) engine 0, not remembered.
function _M.index()
    if mine then return mine end
    local id = ngx.worker.id()
    if not id then return 0 end
    mine = id % n
    return mine
end

-- The cosocket target of engine i (0-based; default: this worker's).
function _M.target(i)
    return targets[(i or _M.index()) + 1]
end

function _M.path(i)
    return paths[(i or _M.index()) + 1]
end

return _M
