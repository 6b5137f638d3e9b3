-- wrk script: GET /feed/{id} for ids drawn uniformly from a file of user
-- ids, one decimal id a line (a snapshot's sparse 64-bit ids, as
-- `benchmark/make_parquet.py --ids-out FILE` writes them), with the default
-- size. Every id is a known user.
--
--   wrk -t2 -c200 -d20s --latency -s benchmark/wrk/sparse_ids.lua \
--       http://127.0.0.1:8080 -- ids.txt [count]
--
-- Only the first `count` ids of the file are read (default 1,000,000: each
-- wrk thread keeps its own copy as strings). Set WRK_REPORT=FILE to get the
-- numbers as JSON.

local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local report = dofile(dir .. "report.lua")

local ids = {}

setup = report.setup
done = report.done

function init(args)
  local path = args[1] or error("usage: -- IDS_FILE [count]")
  local limit = tonumber(args[2]) or 1000000
  for line in io.lines(path) do
    ids[#ids + 1] = "/feed/" .. line
    if #ids >= limit then break end
  end
  if #ids == 0 then error("no ids in " .. path) end
  report.seed()
end

function request()
  return wrk.format("GET", ids[math.random(1, #ids)])
end
