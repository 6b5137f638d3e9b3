-- wrk script: GET /feed/{id} for the even ids 0, 2, 4, ... in turn, each
-- thread its own share, wrapping around at the end: after users / 2
-- requests, half the users have progress (benchmark/carry.sh).
--
--   wrk -t2 -c64 -d60s -s benchmark/wrk/every_other_user.lua \
--       http://127.0.0.1:8080 -- 5000000 2
--
-- Arguments after `--`: the number of users, and wrk's thread count (-t).

local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local report = dofile(dir .. "report.lua")

local users, threads, counter = 5000000, 2, 0

setup = report.setup
done = report.done

function init(args)
  users = tonumber(args[1]) or users
  threads = tonumber(args[2]) or threads
end

function request()
  local index = (thread_index or 1) - 1
  local user = (2 * (index + counter * threads)) % users
  counter = counter + 1
  return wrk.format("GET", "/feed/" .. user)
end
