-- wrk script: GET /feed/{id} for ids drawn uniformly from the configured
-- users, with the default size. Known users only: every answer is a
-- personal feed until a user has been asked for 20 times.
--
--   wrk -t2 -c200 -d20s --latency -s benchmark/wrk/random_ids.lua \
--       http://127.0.0.1:8080 -- 5000000
--
-- The argument after `--` is the number of users (default 5,000,000): ids
-- are 0 to users - 1. Set WRK_REPORT=FILE to get the numbers as JSON.

local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local report = dofile(dir .. "report.lua")

local users = 5000000

setup = report.setup
done = report.done

function init(args)
  users = tonumber(args[1]) or users
  report.seed()
end

function request()
  return wrk.format("GET", "/feed/" .. math.random(0, users - 1))
end
