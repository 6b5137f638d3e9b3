#!/usr/bin/env bash
# What durable progress costs a server that is not asked anything, and how
# fast a large snapshot is verified and served: two figures the progress
# sync and the snapshot check must keep small.
#
#   benchmark/idle.sh                       # 5M users x 200, then 50M x 10
#   benchmark/idle.sh --users 5000000 --feed-len 200 --idle 10
#   benchmark/idle.sh --feed-bin OTHER/feed-server --config OTHER.toml   # an older build
#
# For each size: starts feed-server on the synthetic set with progress on
# (a fresh progress folder, progress.sync_ms 100), waits for "ready", runs
# 3 s of wrk on random users (so the progress file has had changes to
# sync), waits for two more syncs to end (read from /metrics), then reads the server's CPU time (utime+stime
# of /proc/PID/stat) before and after --idle seconds without a request:
# CPU milliseconds per 10 s of idling. The same with progress off is the
# baseline (the runtime's own timers).
# With --snapshot it also imports the synthetic set as a snapshot, then
# times the start to the "ready" line with the file in the page cache
# (every section verified before serving), three times.
# Everything runs on 127.0.0.1 with time limits; servers are stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

sizes=("5000000:200" "50000000:10")
idle=10
bin=target/release/feed-server
config=config/default.toml
snapshot=0
label=""
while (($#)); do
    case $1 in
        --users) users=$2; shift 2 ;;
        --feed-len) sizes=("$users:$2"); shift 2 ;;
        --idle) idle=$2; shift 2 ;;
        --feed-bin) bin=$2; shift 2 ;;
        --config) config=$2; shift 2 ;;
        --snapshot) snapshot=1; shift ;;
        --label) label=$2; shift 2 ;;
        -h|--help) sed -n 2,24p "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
[[ -x $bin ]] || timeout 1200 cargo build --release --locked -p feed-server >&2

work=$(mktemp -d /tmp/feed-idle.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
port=18095
admin_port=19095
ticks=$(getconf CLK_TCK)

cpu_ms() { awk -v t="$ticks" '{print int(($14 + $15) * 1000 / t)}' "/proc/$1/stat"; }

# start USERS FEED_LEN PROGRESS_PATH [env...]: starts the server, waits for
# "feed-server ready", and sets $pid.
start() {
    local users=$1 feed_len=$2 progress=$3
    shift 3
    env FEED__SERVER__PORT=$port FEED__ADMIN__PORT=$admin_port FEED__DATA__USERS="$users" \
        FEED__DATA__FEED_LEN="$feed_len" FEED__PROGRESS__PATH="$progress" \
        FEED__PROGRESS__SYNC_MS=100 FEED__LOG__FORMAT=json "$@" \
        "$bin" --config "$config" >"$work/log" 2>&1 &
    pid=$!
    pids+=("$pid")
    local deadline=$((SECONDS + 600))
    until grep -q '"msg":"feed-server ready"' "$work/log"; do
        kill -0 "$pid" 2>/dev/null || { cat "$work/log" >&2; exit 1; }
        ((SECONDS < deadline)) || { echo "not ready in 600 s" >&2; exit 1; }
        sleep 0.05
    done
}

# syncs: the progress syncs the server has made so far.
syncs() {
    curl -fsS --max-time 5 "http://127.0.0.1:$admin_port/metrics" |
        awk '$1 == "feed_progress_sync_duration_seconds_count" { print $2 }'
}

# wait_for_sync: waits until two more syncs have ended, so that one began
# after the burst and wrote what it moved (bounded: 60 s).
wait_for_sync() {
    local first deadline=$((SECONDS + 60))
    first=$(syncs)
    until (($(syncs) >= first + 2)); do
        ((SECONDS < deadline)) || { echo "no progress sync in 60 s" >&2; exit 1; }
        sleep 0.05
    done
}

# stop PID: kills it and waits until it is gone (and its ports are free).
stop() {
    kill -9 "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

echo "| users x items | progress | CPU ms per ${idle} s idle |"
echo "|---|---|---:|"
for size in "${sizes[@]}"; do
    users=${size%%:*} feed_len=${size##*:}
    for progress in on off; do
        path=""
        [[ $progress == on ]] && path="$work/progress-$users"
        start "$users" "$feed_len" "$path"
        # A burst of requests for random users, so the sync has had work.
        cat >"$work/random.lua" <<LUA
request = function() return wrk.format("GET", "/feed/" .. math.random(0, $users - 1)) end
LUA
        timeout 60 wrk -t2 -c32 -d3s -s "$work/random.lua" "http://127.0.0.1:$port" >/dev/null
        [[ $progress == on ]] && wait_for_sync
        before=$(cpu_ms "$pid")
        sleep "$idle"
        after=$(cpu_ms "$pid")
        echo "| $users x $feed_len | $progress | $((after - before)) |"
        stop "$pid"
    done
done

if ((snapshot)); then
    users=${sizes[0]%%:*} feed_len=${sizes[0]##*:}
    snap=$work/feeds.snap
    FEED__DATA__USERS=$users FEED__DATA__FEED_LEN=$feed_len \
        timeout 1200 "$bin" --config "$config" import --synthetic --output "$snap" >&2
    cat "$snap" >/dev/null # in the page cache, as after a copy or an import
    echo
    echo "| snapshot $users x $feed_len | load_ms (open and verify) | start to ready, ms |"
    echo "|---|---:|---:|"
    for run in 1 2 3; do
        started=$(date +%s%N)
        start "$users" "$feed_len" "" FEED__DATA__SOURCE=snapshot FEED__DATA__SNAPSHOT="$snap"
        ready=$(( ($(date +%s%N) - started) / 1000000 ))
        load=$(grep '"msg":"feed-server ready"' "$work/log" | sed 's/.*"load_ms":\([0-9]*\).*/\1/')
        echo "| run $run${label:+ ($label)} | $load | $ready |"
        stop "$pid"
    done
fi
