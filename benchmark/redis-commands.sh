#!/usr/bin/env bash
# What one request's command costs Redis, by the command's shape
# (docs/SCALING.md, "Designed for what comes next"):
#
#   benchmark/redis-commands.sh                 # 400,000 commands a case
#   benchmark/redis-commands.sh --requests 1000000
#
# Starts one master and one replica (append-only file on, as in
# deploy/local-cluster.sh) on free loopback ports in a scratch folder, and
# runs redis-benchmark (50 clients, 100,000 random users) for each shape a
# request may take, one command at a time per client and then pipelined 8
# deep (as a frontend's connection carries many requests at once):
#
#   INCRBY      today's request: the user's offset moved by the size
#   HINCRBY     the same counter as a field of a per-user hash, which can
#               also hold a keyed request's record (Idempotency-Key)
#   EVALSHA     a script around that HINCRBY: the price of one small script
#               per request, for what plain commands cannot keep atomic
#
# It prints the master's and the replica's CPU time (user + system, from
# /proc) per command. Everything shares the machine's cores with
# redis-benchmark: compare the rows of one run.
set -euo pipefail
cd "$(dirname "$0")/.."

requests=400000
while (($#)); do
    case $1 in
        --requests) requests=$2; shift 2 ;;
        -h|--help) sed -n 2,22p "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
for tool in redis-server redis-cli redis-benchmark; do
    command -v "$tool" >/dev/null || { echo "needs $tool (apt-get install redis-server redis-tools)" >&2; exit 2; }
done

dir=$(mktemp -d)
pids=()
cleanup() {
    if ((${#pids[@]})); then
        kill "${pids[@]}" 2>/dev/null || true
        wait "${pids[@]}" 2>/dev/null || true
    fi
    rm -rf "$dir"
}
trap cleanup EXIT

# A free loopback port, by asking the kernel for one.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
master=$(free_port)
replica=$(free_port)
for port in "$master" "$replica"; do
    mkdir -p "$dir/$port"
    redis-server --port "$port" --bind 127.0.0.1 --appendonly yes --appendfsync everysec \
        --save "" --dir "$dir/$port" --logfile "$dir/$port/log" &
    pids+=($!)
done
for port in "$master" "$replica"; do
    for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
done
redis-cli -p "$replica" replicaof 127.0.0.1 "$master" >/dev/null
for _ in $(seq 100); do
    redis-cli -p "$replica" info replication | grep -q 'master_link_status:up' && break
    sleep 0.1
done

ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
script=$(redis-cli -p "$master" script load "return redis.call('HINCRBY', KEYS[1], 'n', ARGV[1])")

echo "# Redis CPU per command, $(date -u +%Y-%m-%dT%H:%MZ)"
echo
echo "\`benchmark/redis-commands.sh --requests $requests\`: one master and its replica, 50 clients,"
echo "100,000 random users. CPU µs per command, user + system."
echo
echo "| command | pipeline | commands/s | master µs | replica µs |"
echo "|---|---:|---:|---:|---:|"
for depth in 1 8; do
    for case in INCRBY HINCRBY EVALSHA; do
        case $case in
            INCRBY) args=(INCRBY 'o:{__rand_int__}:1' 10) ;;
            HINCRBY) args=(HINCRBY 'u:{__rand_int__}:1' n 10) ;;
            EVALSHA) args=(EVALSHA "$script" 1 'u:{__rand_int__}:1' 10) ;;
        esac
        m0=$(ticks "${pids[0]}"); r0=$(ticks "${pids[1]}")
        rate=$(redis-benchmark -p "$master" -n "$requests" -r 100000 -c 50 -P "$depth" -q "${args[@]}" 2>&1 \
            | tr '\r' '\n' | grep 'requests per second' | tail -1 | sed 's/.*: \([0-9.]*\) requests per second.*/\1/')
        m1=$(ticks "${pids[0]}"); r1=$(ticks "${pids[1]}")
        printf '| %s | %s | %.0f | %.2f | %.2f |\n' "$case" "$depth" "$rate" \
            "$(echo "($m1 - $m0) * 1000000 / $hz / $requests" | bc -l)" \
            "$(echo "($r1 - $r0) * 1000000 / $hz / $requests" | bc -l)"
    done
done
