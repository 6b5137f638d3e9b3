-- wrk script: a mix closer to real traffic than random_ids.lua.
--
--   wrk -t2 -c200 -d20s --latency -s benchmark/wrk/mixed.lua \
--       http://127.0.0.1:8080 -- USERS MAX_SIZE UNKNOWN_PCT HOT_PCT HOT_USERS
--
-- - every request names a size drawn uniformly from 1 to MAX_SIZE (200);
-- - UNKNOWN_PCT percent of requests (5) are for ids at or above USERS, who
--   have no feed: a random answer, and an error for the recorder (which
--   logs it);
-- - HOT_PCT percent (10) are for the HOT_USERS users 0 to HOT_USERS - 1
--   (100), who soon exhaust their feeds and then get random fills;
-- - the rest are for users drawn uniformly from all USERS (5,000,000).
--
-- Set WRK_REPORT=FILE to get the numbers as JSON.

local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local report = dofile(dir .. "report.lua")

local users, max_size, unknown_pct, hot_pct, hot_users = 5000000, 200, 5, 10, 100

setup = report.setup
done = report.done

function init(args)
  users = tonumber(args[1]) or users
  max_size = tonumber(args[2]) or max_size
  unknown_pct = tonumber(args[3]) or unknown_pct
  hot_pct = tonumber(args[4]) or hot_pct
  hot_users = math.max(1, math.min(tonumber(args[5]) or hot_users, users))
  report.seed()
end

function request()
  local roll = math.random() * 100
  local user
  if roll < unknown_pct then
    -- Ids just above the table, and a few far above it.
    if math.random() < 0.5 then
      user = users + math.random(0, 999999)
    else
      user = math.random(users, 4294967295)
    end
  elseif roll < unknown_pct + hot_pct then
    user = math.random(0, hot_users - 1)
  else
    user = math.random(0, users - 1)
  end
  return wrk.format("GET", string.format("/feed/%d?size=%d", user, math.random(1, max_size)))
end
