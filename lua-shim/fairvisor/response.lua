-- fairvisor.response: the response side of a Verdict (its recipe fields, docs/protocol.md).
--
-- No provider knowledge: the engine chose the regexes, the cutoff bytes and the budget. This
-- module splits SSE into events, drops and counts them, cuts the stream at the allowance, and
-- keeps the head and tail of the upstream body for Settle. Per chunk it does a few plain
-- string.find calls and one regex call per event; never a Lua loop over bytes.

local find, sub, concat = string.find, string.sub, table.concat
local floor = math.floor
local re_find, re_match = ngx.re.find, ngx.re.match
local tostring = tostring
local proto = require "fairvisor.proto"

local V = proto.Verdict
-- Placeholders the shim fills in the cutoff (messages.py CUTOFF_TOKENS, CUTOFF_CAPTURE).
local TOKENS_MARK, CAPTURE_MARK = proto.CUTOFF_TOKENS, proto.CUTOFF_CAPTURE

local _M = {}

-- The recipe of one request, kept in ngx.ctx. v is the Verdict array (fields at proto.Verdict).
function _M.new(v)
    local settle_bytes = v[V.settle_bytes] or 0
    local head_n = floor(settle_bytes / 2)
    local r = {
        rid = v[V.reservation_id] or "",
        allowance = v[V.allowance_tokens] or 0, -- output tokens the stream may carry; 0 = do not count or cut
        count_regex = v[V.count_regex] or "",
        cpt_milli = v[V.chars_per_token_milli] or 4000, -- characters per token x 1000
        cutoff = v[V.cutoff] or "",
        drop_regex = v[V.drop_regex] or "",
        settle_bytes = settle_bytes,
        head_n = head_n, -- bytes of the body start kept for Settle
        tail_n = settle_bytes - head_n, -- bytes of the body end kept for Settle
        head = nil, -- the first head_n bytes, once more than settle_bytes arrived
        parts = {}, np = 0, bytes = 0, -- body bytes not yet compacted (after head, once head is set)
        status = 0, -- upstream status seen by header_filter (0 = no response)
        sse = false, -- the SSE filter is on
        rest = nil, -- incomplete SSE event carried to the next chunk
        crlf = nil, -- the stream's line ending: nil until the first "\n" is seen
        chars = 0, -- counted output characters (bytes of count_regex group 1, as sent)
        tokens = 0, -- floor(chars * 1000 / cpt_milli)
        cut = false, -- the stream was ended at the allowance
        ended = false, -- the body reached its end (nginx's last buffer, or the cut); false in
        -- the log phase = the response broke off (the upstream stalled or reset mid-body)
        capture_regex = v[V.capture_regex] or "", -- group 1 of its first match fills CAPTURE_MARK in the cutoff
        captured = nil,
    }
    if r.cpt_milli <= 0 then r.cpt_milli = 1000 end -- a broken value must not divide by zero
    return r
end

-- Whether the verdict asks for anything after the access phase.
function _M.wanted(v)
    local rid = v[V.reservation_id]
    return (rid and rid ~= "") or (v[V.allowance_tokens] or 0) > 0 or (v[V.drop_regex] or "") ~= ""
        or (v[V.settle_bytes] or 0) > 0
end

-- header_filter: SSE is filtered only when there is something to count, cut or drop.
function _M.on_headers(r, status, content_type)
    r.status = status
    if (r.allowance > 0 or r.drop_regex ~= "") and content_type
        and find(content_type:lower(), "text/event-stream", 1, true) then
        r.sse = true
        return true -- the caller clears Content-Length: the body length changes
    end
    return false
end

-- Keeps the first head_n and last tail_n bytes; amortised O(bytes): chunks are listed and
-- compacted only once they hold more than twice settle_bytes.
local function keep(r, chunk)
    local np = r.np + 1
    r.parts[np] = chunk
    r.np = np
    local bytes = r.bytes + #chunk
    if bytes > 2 * r.settle_bytes then
        local all = concat(r.parts, "", 1, np)
        if not r.head then
            r.head = sub(all, 1, r.head_n)
            all = sub(all, r.head_n + 1)
        end
        all = sub(all, -r.tail_n)
        r.parts, r.np, bytes = { all }, 1, #all
    end
    r.bytes = bytes
end

-- Settle.tail: the whole body when it fits settle_bytes, else head .. tail.
function _M.kept(r)
    local all = concat(r.parts, "", 1, r.np)
    local head = r.head
    if not head then
        if #all <= r.settle_bytes then return all end
        head, all = sub(all, 1, r.head_n), sub(all, r.head_n + 1)
    end
    return head .. sub(all, -r.tail_n)
end

-- Adds the characters of every group-1 capture of count_regex in one event.
local function count(r, event)
    local rx = r.count_regex
    if rx == "" then return end
    local ctx, chars = { pos = 1 }, r.chars
    while true do
        local pos = ctx.pos
        local from, to = re_find(event, rx, "jo", ctx, 1)
        if not from then break end
        chars = chars + (to - from + 1)
        if ctx.pos <= pos then break end -- an empty match would loop forever
    end
    r.chars = chars
    r.tokens = floor(chars * 1000 / r.cpt_milli)
end

-- Replaces every plain `mark` in `s` by `value`.
local function fill(s, mark, value)
    local out, n, pos = {}, 0, 1
    while true do
        local from, to = find(s, mark, pos, true)
        if not from then break end
        n = n + 1; out[n] = sub(s, pos, from - 1)
        n = n + 1; out[n] = value
        pos = to + 1
    end
    if n == 0 then return s end
    n = n + 1; out[n] = sub(s, pos)
    return concat(out, "", 1, n)
end

-- The cutoff events with what only the stream knows: the tokens it carried, the capture.
local function cutoff(r)
    local c = r.cutoff
    if not find(c, "\0", 1, true) then return c end
    c = fill(c, TOKENS_MARK, tostring(r.tokens))
    return fill(c, CAPTURE_MARK, r.captured or "")
end

-- One complete event: false = dropped; true, cut = passed, cut = the allowance is now reached.
local function event(r, ev)
    if r.capture_regex ~= "" and not r.captured then
        local m = re_match(ev, r.capture_regex, "jo")
        if m and m[1] then r.captured = m[1] end
    end
    if r.drop_regex ~= "" and re_find(ev, r.drop_regex, "jo") then return false end
    if r.allowance > 0 then
        count(r, ev)
        return true, r.tokens >= r.allowance
    end
    return true, false
end

-- body_filter: returns the bytes to pass on (nil = unchanged) and whether to end the response.
function _M.filter(r, chunk, eof)
    if eof then r.ended = true end
    if r.settle_bytes > 0 and chunk ~= "" then keep(r, chunk) end
    if not r.sse then return nil, false end
    if r.cut then return "", false end -- later chunks of a cut stream go nowhere
    local buf = r.rest and (r.rest .. chunk) or chunk
    r.rest = nil
    local crlf = r.crlf
    if crlf == nil then -- the first line ending tells LF from CRLF streams
        local nl = find(buf, "\n", 1, true)
        if nl then crlf = nl > 1 and sub(buf, nl - 1, nl - 1) == "\r"; r.crlf = crlf end
    end
    local sep = crlf and "\r\n\r\n" or "\n\n"
    local out, n, pos = {}, 0, 1
    while crlf ~= nil do
        local _, e = find(buf, sep, pos, true)
        if not e then break end
        local ev = sub(buf, pos, e)
        pos = e + 1
        local pass, cut = event(r, ev)
        if pass then n = n + 1; out[n] = ev end
        if cut then
            n = n + 1; out[n] = cutoff(r)
            r.cut, r.ended = true, true
            return concat(out, "", 1, n), true
        end
    end
    if pos <= #buf then
        local rest = sub(buf, pos)
        if eof then -- an unterminated last event is still an event
            local pass, cut = event(r, rest)
            if pass then n = n + 1; out[n] = rest end
            if cut then n = n + 1; out[n] = cutoff(r); r.cut = true end
        else
            r.rest = rest
        end
    end
    return concat(out, "", 1, n), false
end

return _M
