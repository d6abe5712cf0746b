-- fairvisor.pipe: one pipelined engine connection per nginx worker; Decide frames travel in batches.
--
-- Why: a cosocket round trip per request (a connection from the pool, one send, one receive,
-- one epoll wake-up on each side) cost about as much nginx CPU as the whole rest of the shim,
-- and the engine one read and one write syscall per frame. Here a request queues its frame and
-- waits on a semaphore; a loop in a timer (the pump) owns the connection, sends every queued
-- frame in one write, and reads the replies, which the engine also writes back in one go.
-- Under load one syscall carries tens of frames. Measured in docs/performance.md.
--
-- Invariants:
--   * The engine answers the frames of one connection in order (docs/protocol.md), so the i-th
--     reply read belongs to the i-th frame of the batch.
--   * The pump sends one batch and reads all its replies before the next (stop and wait): a
--     request never waits behind more than one batch in flight.
--   * A request that stopped waiting (timeout) is never sent if still queued; if its batch is
--     in flight, its reply is read and dropped. Its semaphore is not reused, so a late post
--     cannot wake another request.
--   * Any connection failure fails every request of the batch with the error (the caller
--     applies the fail mode); the next batch connects again and says Hello first (cfg.open).

local semaphore = require "ngx.semaphore"
local u32 = require("fairvisor.msgpack").u32

local byte = string.byte
local timer_at = ngx.timer.at
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

-- FIFO of { frame = {prefix, body}, sem, data, err, gone } from head to tail.
local queue, head, tail = {}, 1, 0
local work = semaphore.new(0) -- posted when a frame is queued while the pump waits
local pumping = false
local spare, n_spare = {}, 0 -- semaphores of requests that were answered, for reuse

function _M.configure(timeout_ms, open)
    cfg.timeout_ms, cfg.open = timeout_ms, open
end

local function finish(e, data, err)
    e.data, e.err = data, err
    e.sem:post(1)
end

local function fail_all(batch, from, n, err)
    for i = from, n do finish(batch[i], nil, err) end
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

local function read_frame(sock)
    local len, err = sock:receive(4)
    if not len then return nil, err end
    local a, b, c, d = byte(len, 1, 4)
    return sock:receive(((a * 256 + b) * 256 + c) * 256 + d)
end

-- Sends one batch and hands out its replies. Returns the connection if it is still usable;
-- on a failed send (nothing delivered) returns nil, "unsent" and leaves the batch unanswered.
local function exchange(sock, batch, frames, n)
    local ok, err = sock:send(frames)
    if not ok then
        sock:close()
        return nil, "unsent", err
    end
    for i = 1, n do
        local data, rerr = read_frame(sock)
        if not data then
            fail_all(batch, i, n, "receive: " .. rerr)
            sock:close()
            return nil
        end
        finish(batch[i], data)
    end
    return sock
end

-- One batch on the kept connection or a new one. An engine that restarted (or closed the
-- connection while it was idle) makes the send fail without delivering anything, so the
-- batch goes again once on a new connection, which says Hello first. (A send can only fail
-- part-way if the engine closed the connection in the middle of a large batch, i.e. while
-- shutting down; frames it read before that are then decided twice: over-counted, never lost.)
local function deliver(sock, batch, frames, n)
    local fresh, err, unsent, send_err = false, nil, nil, nil
    for _ = 1, 2 do
        if not sock then
            sock, err = cfg.open()
            if not sock then
                fail_all(batch, 1, n, err)
                return nil
            end
            fresh = true
        end
        sock, unsent, send_err = exchange(sock, batch, frames, n)
        if not unsent then return sock end
        if fresh then break end
    end
    fail_all(batch, 1, n, "send: " .. send_err)
    return nil
end

local function run()
    local sock
    while true do
        if head > tail then
            if exiting() then break end -- queued requests are served first, even at shutdown
            work:wait(IDLE_WAIT_S)
        end
        local batch, frames, n = take()
        if n > 0 then sock = deliver(sock, batch, frames, n) end
    end
    if sock then sock:close() end
end

-- The timer handler. Even when run prematurely (shutdown), it serves what is queued, then stops.
local function pump()
    local ok, err = pcall(run)
    pumping = false -- the next request starts a new pump (after a failure too)
    if not ok then
        log(ERR, "fairvisor: engine pipe failed: ", err)
        local batch, _, n = take()
        fail_all(batch, 1, n, "pipe failed")
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
    if work:count() < 0 then work:post(1) end -- the pump is waiting for work
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
