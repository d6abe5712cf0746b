-- fairvisor.proto: the engine protocol's tags, field positions and request encoders.
--
-- GENERATED from pyengine/protocol/messages.py by `python -m pyengine.protocol.gen_lua`; do not edit.
-- tests/protocol/test_proto_lua.py fails when this file is not what the generator writes.
--
-- A message is a msgpack array: [1] is its tag, then its fields in messages.py order, so
-- _M.Verdict.status is the index of Verdict.status in a decoded Verdict (v[_M.Verdict.status]).
-- Each request has an encoder taking its fields in order; it returns the frame body (msgpack
-- bytes), fills the defaults of omitted fields, and sends `str` fields as msgpack str.

local mp = require "fairvisor.msgpack"

local encode, mp_str = mp.encode, mp.str

local _M = {}

_M.TAG = 1 -- every message's tag is its first item
_M.PROTOCOL_VERSION = 1
_M.SURFACE_DESCRIBED = 0
_M.SURFACE_INLINE = 1
_M.CUTOFF_TOKENS = "\000T\000"
_M.CUTOFF_CAPTURE = "\000C\000"

-- ---- engine -> shim: read by index ------------------------------------------------------

_M.ErrorReply = { tag = 0, n = 3, code = 2, message = 3 }
_M.HelloReply = { tag = 1, n = 6, protocol_version = 2, generation = 3, headers = 4, needs_body = 5,
    max_body_bytes = 6 }
_M.Verdict = { tag = 2, n = 14, status = 2, headers = 3, body = 4, delay_ms = 5, reservation_id = 6,
    allowance_tokens = 7, count_regex = 8, chars_per_token_milli = 9, cutoff = 10, drop_regex = 11,
    settle_bytes = 12, new_body = 13, capture_regex = 14 }
_M.Reply = { tag = 7, n = 5, status = 2, content_type = 3, body = 4, headers = 5 }

-- ---- shim -> engine: indices, and an encoder per message ---------------------------------

_M.Hello = { tag = 1, n = 4, protocol_version = 2, engine_unavailable_delta = 3, settle_lost_delta = 4 }
function _M.hello(protocol_version, engine_unavailable_delta, settle_lost_delta)
    if engine_unavailable_delta == nil then engine_unavailable_delta = 0 end
    if settle_lost_delta == nil then settle_lost_delta = 0 end
    return encode({ 1, protocol_version, engine_unavailable_delta, settle_lost_delta }, 4)
end

_M.Decide = { tag = 2, n = 11, generation = 2, surface = 3, method = 4, uri = 5, host = 6, remote_addr = 7,
    headers = 8, body = 9, request_id = 10, body_bytes = 11 }
function _M.decide(generation, surface, method, uri, host, remote_addr, headers, body, request_id, body_bytes)
    if request_id == nil then request_id = "" end
    if body_bytes == nil then body_bytes = -1 end
    return encode({ 2, generation, surface, method, uri, host, remote_addr, headers, body, request_id,
        body_bytes }, 11)
end

_M.Settle = { tag = 3, n = 9, reservation_id = 2, status = 3, counted_tokens = 4, cut = 5, tail = 6,
    client_aborted = 7, counted_chars = 8, upstream_bytes_sent = 9 }
function _M.settle(reservation_id, status, counted_tokens, cut, tail, client_aborted, counted_chars,
    upstream_bytes_sent)
    if tail == nil then tail = "" end
    if client_aborted == nil then client_aborted = false end
    if counted_chars == nil then counted_chars = 0 end
    if upstream_bytes_sent == nil then upstream_bytes_sent = -1 end
    return encode({ 3, mp_str(reservation_id), status, counted_tokens, cut, tail, client_aborted,
        counted_chars, upstream_bytes_sent }, 9)
end

_M.Health = { tag = 4, n = 1 }
function _M.health()
    return encode({ 4 }, 1)
end

_M.Metrics = { tag = 5, n = 3, engine_unavailable_delta = 2, settle_lost_delta = 3 }
function _M.metrics(engine_unavailable_delta, settle_lost_delta)
    if engine_unavailable_delta == nil then engine_unavailable_delta = 0 end
    if settle_lost_delta == nil then settle_lost_delta = 0 end
    return encode({ 5, engine_unavailable_delta, settle_lost_delta }, 3)
end

_M.Usage = { tag = 6, n = 2, body = 2 }
function _M.usage(body)
    return encode({ 6, body }, 2)
end

_M.DebugSession = { tag = 8, n = 4, kind = 2, method = 3, secret = 4 }
function _M.debug_session(kind, method, secret)
    return encode({ 8, kind, method, secret }, 4)
end

_M.Admin = { tag = 9, n = 7, uri = 2, method = 3, authorization = 4, body = 5, engine_unavailable_delta = 6,
    settle_lost_delta = 7 }
function _M.admin(uri, method, authorization, body, engine_unavailable_delta, settle_lost_delta)
    if engine_unavailable_delta == nil then engine_unavailable_delta = 0 end
    if settle_lost_delta == nil then settle_lost_delta = 0 end
    return encode({ 9, uri, method, authorization, body, engine_unavailable_delta, settle_lost_delta }, 7)
end

return _M
