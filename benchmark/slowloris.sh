#!/usr/bin/env bash
# Slowloris check: hundreds of connections that send their headers slowly
# must not stop a normal client from being served, and must be cut off by
# the request timeout. Bounded in time; loopback only.
#
#   benchmark/slowloris.sh [--duration SECONDS] [--connections N]
#
# Starts a release feed-server (100k users) on a free port, runs slowhttptest
# in slowloris mode against it, and meanwhile sends one normal request every
# 0.2 s. Fails if any normal request fails or takes longer than 1 s.
set -euo pipefail
cd "$(dirname "$0")/.."

duration=15
connections=500
while [ $# -gt 0 ]; do
    case "$1" in
        --duration) duration=$2; shift 2 ;;
        --connections) connections=$2; shift 2 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done

if ! command -v slowhttptest >/dev/null; then
    echo "installing slowhttptest"
    apt-get update -qq && apt-get install -y -qq slowhttptest >/dev/null
fi
command -v curl >/dev/null || { apt-get update -qq && apt-get install -y -qq curl >/dev/null; }

cargo build --release -q -p feed-server
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
out=$(mktemp -d)
FEED__SERVER__HOST=127.0.0.1 FEED__SERVER__PORT=$port FEED__DATA__USERS=100000 \
    FEED__LIMITS__CLIENT_REQUEST_TIMEOUT_MS=2000 FEED__SERVER__SHUTDOWN_DELAY_MS=0 \
    target/release/feed-server --config config/default.toml >"$out/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break
    sleep 0.1
done
curl -sf "http://127.0.0.1:$port/readyz" >/dev/null || { echo "server not ready"; cat "$out/server.log"; exit 1; }

echo "slowloris: $connections connections for ${duration}s against 127.0.0.1:$port (request timeout 2 s)"
timeout $((duration + 10)) slowhttptest -H -c "$connections" -r 200 -i 5 -x 24 -p 3 -l "$duration" \
    -u "http://127.0.0.1:$port/feed/1" -g -o "$out/slowhttptest" >"$out/slowhttptest.log" 2>&1 &
attack=$!

sleep 2
failures=0; slowest=0; sent=0
end=$((SECONDS + duration - 3))
while [ $SECONDS -lt $end ]; do
    result=$(curl -s -o /dev/null -m 2 -w '%{http_code} %{time_total}' "http://127.0.0.1:$port/feed/$RANDOM" || echo "000 2")
    code=${result% *}; took=${result#* }
    sent=$((sent + 1))
    if [ "$code" != 200 ] || awk "BEGIN{exit !($took > 1.0)}"; then failures=$((failures + 1)); fi
    slowest=$(awk "BEGIN{print ($took > $slowest) ? $took : $slowest}")
    sleep 0.2
done
wait $attack || true

echo "normal requests: $sent sent, $failures failed or slower than 1 s, slowest ${slowest}s"
# slowhttptest's CSV has one row a second: seconds, closed, pending,
# connected, service available. Report the peak of open slow connections,
# how many the server closed, and when the last one was gone.
awk -F, 'NR > 1 { if ($4 > peak) peak = $4; closed = $2; last = $1 }
    END { printf "slowloris: peak %d slow connections open, %d closed by the server, test over at %ds\n", peak, closed, last }' \
    "$out/slowhttptest.csv"
grep -h "Exit status" "$out/slowhttptest.log" || true
if [ "$failures" -gt 0 ] || [ "$sent" -eq 0 ]; then
    echo "FAIL: normal clients were not served while under slowloris"
    exit 1
fi
echo "PASS"
