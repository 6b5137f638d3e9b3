#!/usr/bin/env bash
# Real feeds and durable progress, measured end to end on 127.0.0.1:
#
#   benchmark/snapshot.sh                 # 5,000,000 users x 200 items
#   benchmark/snapshot.sh --users 200000  # a quicker look
#
#  1. writes the offline job's Parquet with pyarrow (benchmark/make_parquet.py,
#     sparse 64-bit ids; skipped when the file is there) and times
#     `feed-server import` on it: rows/s, peak memory;
#  2. times the snapshot server to its first answer, from a snapshot in the
#     page cache, with progress off, with a fresh progress file, and with a
#     restored one;
#  3. rounds of wrk (random known sparse ids) against the snapshot server
#     with progress on and off, against the synthetic set of the same size,
#     and against the constant-response floor: req/s and p99, and ratios
#     within the run.
# wrk and the servers share the machine's cores: compare the ratios.
# Everything has a time limit and the servers it started are stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

users=5000000
feed_len=200
duration=10
rounds=2
data=${BENCH_DATA:-/tmp/feed-bench-data}
while (($#)); do
    case $1 in
        --users) users=$2; shift 2 ;;
        --feed-len) feed_len=$2; shift 2 ;;
        --duration) duration=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        --data) data=$2; shift 2 ;;
        -h|--help) sed -n 2,20p "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done

for tool in wrk curl; do
    command -v "$tool" >/dev/null || { apt-get update -qq && apt-get install -y -qq "$tool"; }
done
python3 -c 'import pyarrow, numpy' 2>/dev/null || python3 -m pip install --quiet pyarrow numpy

timeout 1200 cargo build --release --locked -p feed-server -p feed-bench --bins >&2
server=target/release/feed-server
floor=target/release/feed-floor
config=config/default.toml
port=18090
floor_port=18091
admin_port=19090
mkdir -p "$data"
parquet=$data/feeds-$users-$feed_len.parquet
ids=$data/ids-$users.txt
snap=$data/feeds-$users-$feed_len.snap
progress=$data/progress
stamp=$(date -u +%Y%m%dT%H%M%SZ)
out=benchmark/results/snapshot-$stamp.md

pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

ms() { echo $(( ($2 - $1) / 1000000 )); }

if [[ ! -f $parquet ]]; then
    echo "== writing $parquet with pyarrow" >&2
    timeout 1800 python3 benchmark/make_parquet.py --users "$users" --feed-len "$feed_len" \
        --out "$parquet" --ids-out "$ids"
fi

echo "== import" >&2
/usr/bin/time -v -o "$data/import.time" timeout 1800 "$server" --config "$config" import \
    --input "$parquet" --output "$snap" > "$data/import.log" 2>"$data/import.err"
import_summary=$(cat "$data/import.log")
import_rss=$(awk -F': ' '/Maximum resident/ {print $2}' "$data/import.time")
import_wall=$(awk -F': ' '/Elapsed \(wall/ {print $2}' "$data/import.time")
cat "$snap" > /dev/null   # in the page cache, as after an import

first_id=$(head -1 "$ids")
# start ENV...: starts feed-server with ENV, waits for its first answer;
# sets first_answer_ms to the milliseconds from start to that answer.
start() {
    local started ended
    started=$(date +%s%N)
    env FEED__SERVER__PORT=$port FEED__ADMIN__PORT=$admin_port FEED__SERVER__HOST=127.0.0.1 \
        FEED__SERVER__SHUTDOWN_DELAY_MS=0 FEED__LOG__LEVEL=warn "$@" \
        "$server" --config "$config" > "$data/server.log" 2>&1 &
    pids+=($!)
    local deadline=$((SECONDS + 300))
    until curl -sf -o /dev/null "http://127.0.0.1:$port/feed/$first_id"; do
        ((SECONDS < deadline)) || { echo "server not ready" >&2; exit 1; }
        sleep 0.005
    done
    ended=$(date +%s%N)
    first_answer_ms=$(ms "$started" "$ended")
}
stop() {
    local pid=${pids[-1]}
    kill -TERM "$pid"; timeout 60 tail --pid="$pid" -f /dev/null || kill -9 "$pid"
    unset 'pids[-1]'
}
snapshot_env=(FEED__DATA__SOURCE=snapshot "FEED__DATA__SNAPSHOT=$snap")

echo "== time to first answer" >&2
start "${snapshot_env[@]}" FEED__PROGRESS__PATH=; off_ms=$first_answer_ms; stop
rm -rf "$progress"
start "${snapshot_env[@]}" "FEED__PROGRESS__PATH=$progress"; fresh_ms=$first_answer_ms; stop
start "${snapshot_env[@]}" "FEED__PROGRESS__PATH=$progress"; restored_ms=$first_answer_ms; stop

# round NAME URL SCRIPT ARGS...: one wrk run; prints "req/s p99_ms".
round() {
    local name=$1 url=$2 script=$3; shift 3
    local report=$data/wrk-$name.json
    WRK_REPORT=$report timeout $((duration + 30)) wrk -t2 -c200 -d"${duration}s" --latency \
        -s "$script" "$url" -- "$@" > "$data/wrk-$name.txt"
    python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); e=r["errors"]; assert e["status"]==0 and e["timeout"]==0, e; print(round(r["requests"]*1e6/r["duration_us"]), r["latency_us"]["p99"]/1000)' "$report"
}

declare -A rps p99
record() { local name=$1 line=$2; rps[$name]+="${line%% *} "; p99[$name]+="${line##* } "; }

echo "== load rounds" >&2
"$floor" --host 127.0.0.1 --port "$floor_port" > "$data/floor.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 50); do curl -sf -o /dev/null "http://127.0.0.1:$floor_port/feed/1" && break; sleep 0.1; done
for r in $(seq 1 "$rounds"); do
    start "${snapshot_env[@]}" FEED__PROGRESS__PATH=
    record "snapshot, progress off" "$(round off "http://127.0.0.1:$port" benchmark/wrk/sparse_ids.lua "$ids")"
    stop
    start "${snapshot_env[@]}" "FEED__PROGRESS__PATH=$progress"
    record "snapshot, progress on" "$(round on "http://127.0.0.1:$port" benchmark/wrk/sparse_ids.lua "$ids")"
    stop
    record "floor" "$(round floor "http://127.0.0.1:$floor_port" benchmark/wrk/sparse_ids.lua "$ids")"
done
start FEED__DATA__USERS="$users" FEED__DATA__FEED_LEN="$feed_len" FEED__PROGRESS__PATH=
for r in $(seq 1 "$rounds"); do
    record "synthetic, progress off" "$(round synthetic "http://127.0.0.1:$port" benchmark/wrk/random_ids.lua "$users")"
done
stop

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR % 2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
ratio() { python3 -c "print(f'{$1/$2:.3f}')"; }

{
    echo "# Snapshot and durable progress: $users users x $feed_len items"
    echo
    echo "\`benchmark/snapshot.sh --users $users --feed-len $feed_len --duration $duration --rounds $rounds\` at $stamp, commit \`$(git rev-parse --short=12 HEAD)\`."
    echo "wrk -t2 -c200 and the servers share the machine's 2 cores: compare the ratios."
    echo
    echo "## Import (Parquet written by pyarrow, snappy, sparse u64 ids)"
    echo
    echo '```'
    echo "$import_summary"
    echo '```'
    echo
    echo "Wall time $import_wall, peak RSS $import_rss KiB."
    echo
    echo "## Time to the first answer (snapshot in the page cache)"
    echo
    echo "| progress | ms |"
    echo "|---|---:|"
    echo "| off (in memory) | $off_ms |"
    echo "| on, fresh file | $fresh_ms |"
    echo "| on, restored file | $restored_ms |"
    echo
    echo "## Load, $rounds round(s) of ${duration} s each (medians)"
    echo
    echo "| target | req/s | p99 ms |"
    echo "|---|---:|---:|"
    for name in "snapshot, progress off" "snapshot, progress on" "synthetic, progress off" "floor"; do
        echo "| $name | $(echo "${rps[$name]}" | median) | $(echo "${p99[$name]}" | median) |"
    done
    off=$(echo "${rps["snapshot, progress off"]}" | median)
    on=$(echo "${rps["snapshot, progress on"]}" | median)
    syn=$(echo "${rps["synthetic, progress off"]}" | median)
    fl=$(echo "${rps[floor]}" | median)
    echo
    echo "- snapshot (sparse ids) / floor req/s: $(ratio "$off" "$fl")"
    echo "- synthetic / floor req/s: $(ratio "$syn" "$fl")"
    echo "- progress on / off req/s: $(ratio "$on" "$off")"
    echo "- p99 snapshot / floor: $(ratio "$(echo "${p99["snapshot, progress off"]}" | median)" "$(echo "${p99[floor]}" | median)")"
} > "$out"
cat "$out"
echo "== wrote $out" >&2
