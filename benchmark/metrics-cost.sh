#!/usr/bin/env bash
# What request metrics cost: the same release feed-server twice, metrics on
# and metrics off ([admin] metrics), loaded in turn by wrk (on, off, on, off,
# ...) in one run, reporting each round and the median ratio off/on of req/s.
# Bounded in time; loopback only.
#
#   benchmark/metrics-cost.sh [--rounds N] [--duration S] [--users N] [--connections N]
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=3; duration=10; users=1000000; connections=100
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) rounds=$2; shift 2 ;;
        --duration) duration=$2; shift 2 ;;
        --users) users=$2; shift 2 ;;
        --connections) connections=$2; shift 2 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release -q -p feed-server

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true' EXIT
start() { # metrics-flag -> port
    local port admin
    port=$(free_port); admin=$(free_port)
    FEED__SERVER__HOST=127.0.0.1 FEED__SERVER__PORT=$port FEED__ADMIN__PORT=$admin \
        FEED__DATA__USERS=$users FEED__ADMIN__METRICS=$1 FEED__SERVER__SHUTDOWN_DELAY_MS=0 \
        target/release/feed-server --config config/default.toml >/dev/null 2>&1 &
    pids+=($!)
    for _ in $(seq 600); do
        curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && { echo "$port"; return; }
        sleep 0.1
    done
    echo "server did not become ready" >&2; exit 1
}
on=$(start true)
off=$(start false)
echo "metrics on :$on, off :$off; $users users; wrk -t2 -c$connections -d${duration}s, $rounds rounds"

rate() { # port -> req/s
    wrk -t2 -c"$connections" -d"${duration}s" -s benchmark/wrk/random_ids.lua "http://127.0.0.1:$1" -- "$users" 2>/dev/null \
        | awk '/Requests\/sec/ {print $2}'
}
rate "$on" >/dev/null; rate "$off" >/dev/null   # warm-up
ratios=()
for r in $(seq "$rounds"); do
    a=$(rate "$on"); b=$(rate "$off")
    ratio=$(awk "BEGIN{printf \"%.4f\", $b / $a}")
    ratios+=("$ratio")
    echo "round $r: metrics on $a req/s, off $b req/s, off/on $ratio"
done
median=$(printf '%s\n' "${ratios[@]}" | sort -n | awk '{a[NR]=$1} END{print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}')
echo "median off/on: $median (the cost of metrics is $(awk "BEGIN{printf \"%.1f\", ($median - 1) * 100}")% of req/s)"
