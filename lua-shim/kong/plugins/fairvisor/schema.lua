-- Kong plugin schema for fairvisor: the engine's Unix socket, how long to wait for it, and the fail mode.
local typedefs = require "kong.db.schema.typedefs"

return {
    name = "fairvisor",
    fields = {
        { protocols = typedefs.protocols_http },
        { config = {
            type = "record",
            fields = {
                -- The socket `fairvisor engine` listens on (FAIRVISOR_ENGINE_SOCKET); Kong's workers
                -- must be able to open it (it is mode 0660: share the engine user's group).
                { socket = { type = "string", required = true, default = "/run/fairvisor/engine.sock",
                             match = "^/" } },
                -- Connect, send and each receive, in milliseconds (FAIRVISOR_ENGINE_TIMEOUT_MS).
                { timeout_ms = { type = "integer", required = true, default = 100, between = { 1, 60000 } } },
                -- open: allow with X-Fairvisor-Degraded; closed: 503 engine_unavailable.
                { fail_mode = { type = "string", required = true, default = "open", one_of = { "open", "closed" } } },
            },
        } },
    },
}
