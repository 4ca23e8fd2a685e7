-- wrk script for the reload figure: the start and end of every request, on CLOCK_MONOTONIC
-- (the clock of the servers' hooks and of the benchmark), so that any window of the run can
-- be cut out afterwards. Run with as many threads as connections (-tC -cC): each thread then
-- has one connection, whose request and response alternate, so that they pair up.
local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clock, bench_timespec *tp);
]]
local CLOCK_MONOTONIC = 1
local now = ffi.new("bench_timespec")

local function now_us()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, now)
  return tonumber(now.tv_sec) * 1000000 + math.floor(tonumber(now.tv_nsec) / 1000)
end

-- per thread (read by done() through thread:get)
starts, ends, bad = {}, {}, {}
local message, sent

function init(args)
  message = wrk.format()
end

function request()
  sent = now_us()
  return message
end

function response(status, headers, body)
  local n = #ends + 1
  ends[n] = now_us()
  starts[n] = sent
  if status < 200 or status > 299 then
    bad[#bad + 1] = ends[n]
  end
end

-- in the main state
local threads = {}

function setup(thread)
  threads[#threads + 1] = thread
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("PROBE errors %d %d %d %d %d\n", e.connect, e.read, e.write, e.status, e.timeout))
  for _, thread in ipairs(threads) do
    local s, t, b = thread:get("starts"), thread:get("ends"), thread:get("bad")
    for i = 1, #t do
      io.write(string.format("PROBE r %.0f %.0f\n", s[i], t[i]))
    end
    for i = 1, #b do
      io.write(string.format("PROBE bad %.0f\n", b[i]))
    end
  end
end
