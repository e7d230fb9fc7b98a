-- wrk script for `tools/bench ingest`: POST /l/events with realistic SDK bodies.
--
--   wrk -t T -c C -d D -s ingest.lua URL -- KEY EVENTS TAG RATE COUNT T
--
-- KEY    the SDK key (Authorization: Bearer KEY)
-- EVENTS events per request: 1 posts the single-object form, N > 1 {"events": [...]}
-- TAG    a word unique to this wrk run, so event ids never repeat across runs
-- RATE   requests/s for the whole run, paced by the delay() hook; 0 = as fast as possible
-- COUNT  1: count answers by status and sum "accepted" (costs little client CPU)
-- T      wrk's thread count again (each thread paces RATE / T)
--
-- Every event has its own event_id (TAG-thread-counter), an email, a phone and a user id
-- drawn from 50,000 users, and the request one of a few real mobile User-Agents.
-- done() prints one line "BENCH key=value ..." that tools/bench parses.

local ffi = require ("ffi")
ffi.cdef [[
    typedef struct { long tv_sec; long tv_nsec; } bench_timespec_t;
    int clock_gettime (int clock, bench_timespec_t *ts);
]]
local timespec = ffi.new ("bench_timespec_t")
local function now_ms ()
    ffi.C.clock_gettime (1, timespec)      -- CLOCK_MONOTONIC
    return tonumber (timespec.tv_sec) * 1000 + tonumber (timespec.tv_nsec) / 1e6
end
local function epoch_ms ()
    ffi.C.clock_gettime (0, timespec)      -- CLOCK_REALTIME
    return tonumber (timespec.tv_sec) * 1000 + math.floor (tonumber (timespec.tv_nsec) / 1e6)
end

local user_agents = {
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
    "Mozilla/5.0 (iPad; CPU OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8 Pro) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.6367.82 Mobile Safari/537.36",
    "Mozilla/5.0 (Linux; Android 13; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/123.0.6312.118 Mobile Safari/537.36",
    "Dalvik/2.1.0 (Linux; U; Android 12; Redmi Note 11 Build/SKQ1.211103.001)",
}
local names = { "purchase", "add_to_cart", "view_content", "sign_up", "app_open" }

-- main state: hands each thread its id, keeps the threads for done()
local threads = {}
local next_tid = 0
function setup (thread)
    next_tid = next_tid + 1
    thread:set ("tid", next_tid)
    table.insert (threads, thread)
end

-- thread state
tid = 0
sent = 0            -- requests built
events_sent = 0
s202 = 0
s503 = 0
s503t = 0
sother = 0
accepted = 0
local key, per_request, tag, interval, next_slot
local headers_by_ua = {}

function init (args)
    key = args [1] or error ("ingest.lua: the SDK key is missing")
    per_request = tonumber (args [2] or "1")
    tag = args [3] or "t"
    local rate = tonumber (args [4] or "0")
    local count = args [5] == "1"
    for i, ua in ipairs (user_agents) do
        headers_by_ua [i] = {
            ["Host"] = wrk.headers ["Host"],
            ["Authorization"] = "Bearer " .. key,
            ["Content-Type"] = "application/json",
            ["User-Agent"] = ua,
        }
    end
    if rate > 0 then
        -- each thread paces its share: one request per slot, slots interval ms apart
        local threads_n = tonumber (args [6] or "1")
        interval = 1000 * threads_n / rate
        next_slot = 0
        delay = function ()
            -- slots missed while every connection was busy are caught up, but at most
            -- 10 ms of them: a closed loop cannot be an open one
            local now = now_ms ()
            if next_slot < now - 10 then next_slot = now - 10 end
            local wait = next_slot - now
            next_slot = next_slot + interval
            return wait > 0 and wait or 0
        end
    end
    if count then
        response = function (status, headers, body)
            if status == 202 then
                s202 = s202 + 1
                local n = body and string.match (body, '"accepted":(%d+)')
                if n then accepted = accepted + tonumber (n) end
            elseif status == 503 then
                s503 = s503 + 1
                -- "timeout": the request waited out the gateway's deadline (10 s);
                -- else the pipeline refused it at once ("overloaded", "unavailable")
                if body and string.find (body, '"code":"timeout"', 1, true) then
                    s503t = s503t + 1
                end
            else
                sother = sother + 1
            end
        end
    end
end

local function event (n)
    local user = (tid * 7919 + n * 104729) % 50000
    return string.format (
        '{"event_id":"%s-%d-%d","name":"%s","timestamp":%d,"user_id":"u%d",'
        .. '"email":"user%d@example.com","phone":"+1 650 555 %04d",'
        .. '"properties":{"value":%d.99,"currency":"USD","content_ids":["sku-%d"]},'
        .. '"app":{"version":"1.2.3","build":"123","package":"com.example.shop"},'
        .. '"consent":{"ads":true,"att":"authorized"}}',
        tag, tid, n, names [n % #names + 1], epoch_ms (), user, user, user % 10000,
        n % 100, user % 500)
end

function request ()
    local body
    if per_request == 1 then
        sent = sent + 1
        body = event (sent)
    else
        local parts = {}
        for i = 1, per_request do
            sent = sent + 1
            parts [i] = event (sent)
        end
        body = '{"events":[' .. table.concat (parts, ",") .. ']}'
    end
    events_sent = events_sent + per_request
    return wrk.format ("POST", "/l/events", headers_by_ua [sent % #user_agents + 1], body)
end

function done (summary, latency, requests)
    local c202, c503, c503t, cother, acc, built = 0, 0, 0, 0, 0, 0
    for _, thread in ipairs (threads) do
        c202 = c202 + (thread:get ("s202") or 0)
        c503 = c503 + (thread:get ("s503") or 0)
        c503t = c503t + (thread:get ("s503t") or 0)
        cother = cother + (thread:get ("sother") or 0)
        acc = acc + (thread:get ("accepted") or 0)
        built = built + (thread:get ("events_sent") or 0)
    end
    local e = summary.errors
    io.write (string.format (
        "BENCH requests=%d duration_us=%d bytes=%d status_errors=%d connect_errors=%d "
        .. "read_errors=%d write_errors=%d timeouts=%d p50_us=%d p90_us=%d p99_us=%d "
        .. "max_us=%d mean_us=%.0f s202=%d s503=%d s503_timeout=%d sother=%d accepted=%d "
        .. "events_built=%d\n",
        summary.requests, summary.duration, summary.bytes, e.status, e.connect, e.read,
        e.write, e.timeout, latency:percentile (50), latency:percentile (90),
        latency:percentile (99), latency.max, latency.mean, c202, c503, c503t, cother, acc, built))
end
