-- fairvisor.pipe: one pipelined engine connection per nginx worker; Decide frames travel in batches.
--
-- Why: a cosocket round trip per request (a connection from the pool, one send, one receive,
-- one epoll wake-up on each side) cost about as much nginx CPU as the whole rest of the shim,
-- and the engine one read and one write syscall per frame. Here a request queues its frame and
-- waits on a semaphore. A timer (the pump) owns the connection: its writer sends every queued
-- frame in one write as soon as it wakes, and a reader light thread on the same connection
-- (cosockets are full duplex) hands out the replies as they arrive. Under load one syscall
-- carries tens of frames; at a low rate a frame is never held back behind another batch's
-- round trip. Measured in docs/performance.md.
--
-- Invariants:
--   * The engine answers the frames of one connection in order (docs/protocol.md), so the i-th
--     reply read belongs to the i-th frame sent on that connection (its `sent` FIFO).
--   * A request that stopped waiting (timeout) is never sent if still queued; if it was sent,
--     its reply is read and dropped. Its semaphore is not reused, so a late post cannot wake
--     another request.
--   * Any connection failure fails every request sent on it and not yet answered (the caller
--     applies the fail mode); the next batch connects again and says Hello first (cfg.open).

local semaphore = require "ngx.semaphore"
local u32 = require("fairvisor.msgpack").u32

local byte = string.byte
local timer_at, spawn, wait_thread = ngx.timer.at, ngx.thread.spawn, ngx.thread.wait
local exiting = ngx.worker.exiting
local log, ERR = ngx.log, ngx.ERR

local MAX_BATCH_FRAMES = 128 -- frames per write; more wait for the next batch
local MAX_BATCH_BYTES = 1048576 -- frame bytes per write (a batch holds at least one frame)
local IDLE_WAIT_S = 0.5 -- an idle pump wakes this often to notice a worker shutdown

local _M = {}

local cfg = {
    timeout_ms = 100, -- a request's whole wait; the connection's own timeouts are set by `open`
    open = nil, -- function() -> sock | nil, err: a new engine connection that has said Hello
}

-- FIFO of { frame = {prefix, body}, sem, data, err, gone } from head to tail: not yet sent.
local queue, head, tail = {}, 1, 0
local work = semaphore.new(0) -- posted when a frame is queued while the writer waits
local pumping = false
local spare, n_spare = {}, 0 -- semaphores of requests that were answered, for reuse

function _M.configure(timeout_ms, open)
    cfg.timeout_ms, cfg.open = timeout_ms, open
end

-- One frame body from a cosocket (4-byte big-endian length, then the body): the one frame
-- reader of the shim (fairvisor.client reads its pooled connections with it too).
-- On a failure: nil, err, torn; torn = part of the frame was consumed (the stream is lost).
function _M.read_frame(sock)
    local len, err, partial = sock:receive(4)
    if not len then return nil, err, partial ~= nil and partial ~= "" end
    local a, b, c, d = byte(len, 1, 4)
    local data
    data, err = sock:receive(((a * 256 + b) * 256 + c) * 256 + d)
    if not data then return nil, err, true end
    return data
end
local read_frame = _M.read_frame

local function finish(e, data, err)
    e.data, e.err = data, err
    e.sem:post(1)
end

-- The next batch, oldest first; requests that gave up are left out.
local function take()
    local batch, frames, n, bytes = {}, {}, 0, 0
    while head <= tail and n < MAX_BATCH_FRAMES do
        local e = queue[head]
        local size = #e.frame[2] + 4
        if n > 0 and bytes + size > MAX_BATCH_BYTES then break end
        queue[head] = nil
        head = head + 1
        if not e.gone then
            n = n + 1
            batch[n] = e
            frames[2 * n - 1], frames[2 * n] = e.frame[1], e.frame[2]
            bytes = bytes + size
        end
    end
    if head > tail then head, tail = 1, 0 end
    return batch, frames, n
end

-- A connection: its socket, the FIFO of requests sent on it and not yet answered, and its reader.
local function new_conn(sock)
    return { sock = sock, sent = {}, first = 1, last = 0, more = semaphore.new(0), broken = false, done = false }
end

-- Fails every request sent on conn and not yet answered.
local function fail_sent(conn, err)
    local sent = conn.sent
    for i = conn.first, conn.last do
        finish(sent[i], nil, err)
        sent[i] = nil
    end
    conn.first, conn.last = 1, 0
end

-- Whether a request sent on conn still waits for its reply (has not given up).
local function awaited(conn)
    local sent = conn.sent
    for i = conn.first, conn.last do
        if not sent[i].gone then return true end
    end
    return false
end

-- The reader light thread: replies in order, one per sent request, until the connection
-- breaks or the writer is done with it. A read timeout between frames is not a failure while
-- a request still waits: each request's own wait (timeout_ms) bounds it, so a slow reply to an
-- earlier frame never fails a later request early. The reader owns closing the socket.
local function read_replies(conn)
    local sock, sent = conn.sock, conn.sent
    while true do
        if conn.first > conn.last then
            if conn.broken or conn.done then break end
            conn.more:wait(IDLE_WAIT_S)
        else
            local data, err, torn = read_frame(sock)
            if data then
                local i = conn.first
                local e = sent[i]
                sent[i] = nil
                conn.first = i + 1
                if conn.first > conn.last then conn.first, conn.last = 1, 0 end
                finish(e, data)
            elseif torn or err ~= "timeout" or conn.broken or not awaited(conn) then
                conn.broken = true
                fail_sent(conn, "receive: " .. err)
                break
            end
        end
    end
end

-- The reader's body, guarded: whatever happens, the connection ends closed and nobody waits on it.
local function reader(conn)
    local ok, err = pcall(read_replies, conn)
    if not ok then log(ERR, "fairvisor: engine pipe reader failed: ", err) end
    conn.broken = true
    fail_sent(conn, "pipe closed")
    conn.sock:close()
end

local function fail_all(batch, n, err)
    for i = 1, n do finish(batch[i], nil, err) end
end

-- Sends one batch on conn; returns false when nothing was delivered (the connection is broken).
local function send(conn, batch, frames, n)
    local ok = conn.sock:send(frames)
    if not ok then
        conn.broken = true
        conn.more:post(1) -- an idle reader wakes and closes the socket
        return false
    end
    local sent, last = conn.sent, conn.last
    for i = 1, n do sent[last + i] = batch[i] end
    conn.last = last + n
    if conn.more:count() < 0 then conn.more:post(1) end -- the reader was idle
    return true
end

-- Opens a connection and starts its reader; nil, err when the engine cannot be reached.
local function open()
    local sock, err = cfg.open()
    if not sock then return nil, err end
    local conn = new_conn(sock)
    conn.reader = spawn(reader, conn)
    return conn
end

-- One batch on the kept connection or a new one. An engine that restarted (or closed the
-- connection while it was idle) makes the send fail without delivering anything, so the
-- batch goes again once on a new connection, which says Hello first. (A send can only fail
-- part-way if the engine closed the connection in the middle of a large batch, i.e. while
-- shutting down; frames it read before that are then decided twice: over-counted, never lost.)
local function deliver(conn, batch, frames, n)
    for attempt = 1, 2 do
        local fresh = false
        if not conn or conn.broken then
            local err
            conn, err = open()
            if not conn then
                fail_all(batch, n, err)
                return nil
            end
            fresh = true
        end
        if send(conn, batch, frames, n) then return conn end
        if fresh or attempt == 2 then break end
    end
    fail_all(batch, n, "send: engine connection closed")
    return nil
end

local current -- the pump's connection, so that a failed pump still lets its reader finish

local function run()
    while true do
        if head > tail then
            if exiting() then break end -- queued requests are served first, even at shutdown
            work:wait(IDLE_WAIT_S)
        end
        local batch, frames, n = take()
        if n > 0 then current = deliver(current, batch, frames, n) end
    end
    local conn = current
    if conn then
        current = nil
        conn.done = true
        conn.more:post(1)
        wait_thread(conn.reader) -- replies still on their way are handed out before the pump ends
    end
end

-- The timer handler. Even when run prematurely (shutdown), it serves what is queued, then stops.
local function pump()
    local ok, err = pcall(run)
    pumping = false -- the next request starts a new pump (after a failure too)
    if not ok then
        log(ERR, "fairvisor: engine pipe failed: ", err)
        local batch, _, n = take()
        fail_all(batch, n, "pipe failed")
        if current then -- its reader hands out what is on its way, then closes the socket
            current.done = true
            current.more:post(1)
            current = nil
        end
    end
end

-- False in a worker that is shutting down: its pump drains the queue and stops, so requests
-- still finishing there use a direct connection instead (client.decide).
function _M.usable()
    return not exiting()
end

-- Sends one frame body (msgpack bytes) and returns the reply's body, or nil, err on a failure
-- or when no reply came within wait_s seconds (default: timeout_ms).
function _M.call(body, wait_s)
    if not pumping then
        local ok, err = timer_at(0, pump)
        if not ok then return nil, "pipe timer: " .. err end
        pumping = true
    end
    local sem
    if n_spare > 0 then
        sem, spare[n_spare] = spare[n_spare], nil
        n_spare = n_spare - 1
    else
        sem = semaphore.new(0)
    end
    local e = { frame = { u32(#body), body }, sem = sem }
    tail = tail + 1
    queue[tail] = e
    if work:count() < 0 then work:post(1) end -- the writer is waiting for work
    wait_s = wait_s or cfg.timeout_ms / 1000
    local ok, err = sem:wait(wait_s)
    if not ok then
        e.gone = true
        return nil, "no reply within " .. wait_s * 1000 .. " ms (" .. err .. ")"
    end
    n_spare = n_spare + 1
    spare[n_spare] = sem
    if e.err then return nil, e.err end
    return e.data
end

return _M
