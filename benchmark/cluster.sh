#!/usr/bin/env bash
# Scale-out measured on loopback (docs/SCALING.md):
#
#   benchmark/cluster.sh                  # 100,000 users x 200, 2 rounds of 10 s
#   benchmark/cluster.sh --users 1000000  # a larger data set
#   benchmark/cluster.sh --carry          # the rounds over a second version
#   HAPROXY_MODE=http benchmark/cluster.sh  # HAProxy reading HTTP (default: tcp)
#
#  1. brings up deploy/local-cluster.sh (6 Redis nodes, 2 frontends,
#     HAProxy) in its own state folder, and one in-memory feed-server on the
#     same snapshot;
#     With --carry, wrk first gives users progress for 10 s, and the same
#     snapshot is published again as a second version, so that every
#     request over Redis is the carried request (docs/SCALING.md);
#  2. rounds of wrk (random known users) against the in-memory server, one
#     frontend over Redis, and the two frontends through HAProxy: req/s and
#     p99, with the Redis commands per request counted from every node's
#     INFO commandstats (HINCRBY per request must be 1), and the CPU a
#     request costs the frontends and every Redis node against the
#     in-memory server's (the goal of docs/SCALING.md: at most 2x);
#  3. kills a master under load through HAProxy: answers by status, the
#     seconds during which answers were degraded (storage errors rising in
#     the frontends' metrics), and the time to the replica's promotion.
# wrk, six Redis nodes, HAProxy and the servers share the machine's cores:
# compare the ratios within one run. Everything targets 127.0.0.1, has a
# time limit, and what it started is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

users=100000
duration=10
rounds=2
connections=64
carry=
kill_after=5
failover_duration=25
while (($#)); do
    case $1 in
        --users) users=$2; shift 2 ;;
        --duration) duration=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        --connections) connections=$2; shift 2 ;;
        --carry) carry=1; shift ;;
        -h|--help) sed -n 2,26p "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done

need=()
for tool in wrk curl jq bc redis-server redis-cli haproxy; do
    command -v "$tool" >/dev/null || need+=("$tool")
done
if ((${#need[@]})); then
    apt-get update -qq
    apt-get install -y -qq wrk curl jq bc redis-server redis-tools haproxy
fi
timeout 1200 cargo build --release --locked -p feed-server >&2

export STATE_DIR=target/bench-cluster
export USERS=$users
server=target/release/feed-server
memory_port=18810
stamp=$(date -u +%Y%m%dT%H%M%SZ)
out=benchmark/results/cluster-$stamp.md
tmp=$(mktemp -d)
memory_pid=
wrk_pid=

cleanup() {
    [[ -n $wrk_pid ]] && kill "$wrk_pid" 2>/dev/null || true
    [[ -n $memory_pid ]] && kill "$memory_pid" 2>/dev/null || true
    deploy/local-cluster.sh down >/dev/null 2>&1 || true
}
trap cleanup EXIT

deploy/local-cluster.sh down >/dev/null 2>&1 || true
timeout 300 deploy/local-cluster.sh up
# The nodes ask for the password the cluster script keeps; redis-cli reads it
# from the environment.
REDISCLI_AUTH=$(head -n 1 "$STATE_DIR/redis-password")
export REDISCLI_AUTH

FEED__DATA__SOURCE=snapshot FEED__DATA__SNAPSHOT=$STATE_DIR/snapshot.ffs \
    FEED__SERVER__HOST=127.0.0.1 FEED__SERVER__PORT=$memory_port FEED__ADMIN__PORT=18910 \
    FEED__PROGRESS__PATH= "$server" >"$tmp/memory.log" 2>&1 &
memory_pid=$!
for _ in $(seq 300); do
    curl -fs "http://127.0.0.1:$memory_port/readyz" >/dev/null && break
    sleep 0.1
done

nodes=(17000 17001 17002 17003 17004 17005)
# redis-cli --cluster create makes the first three nodes the masters.
masters=(17000 17001 17002)
# Sum of one command's calls (or of all commands, with "all") on the nodes
# named after it (default: every node).
calls() {
    local want=$1 port total=0 n
    shift
    (($#)) || set -- "${nodes[@]}"
    for port in "$@"; do
        n=$(redis-cli -p "$port" info commandstats 2>/dev/null | tr -d '\r' | awk -F'[=,:]' -v want="cmdstat_$want" '
            want == "cmdstat_all" && /^cmdstat_/ && $1 != "cmdstat_info" { s += $3 }
            $1 == want { s += $3 } END { print s + 0 }')
        total=$((total + n))
    done
    echo "$total"
}

# Reads of client connections the nodes named (by port) have done.
reads() {
    local port total=0 n
    for port in "$@"; do
        n=$(redis-cli -p "$port" info stats | tr -d '\r' | awk -F: '$1 == "total_reads_processed" { print $2 + 0 }')
        [[ -n $n ]] || { echo "no total_reads_processed from redis on $port" >&2; exit 1; }
        total=$((total + n))
    done
    echo "$total"
}

# Context switches (voluntary and not) of every thread of the processes
# whose pid files are given: how often they slept and woke.
switches() {
    local total=0 file pid n
    for file in "$@"; do
        pid=$(cat "$file")
        n=$(cat /proc/"$pid"/task/*/status 2>/dev/null | awk '/^(non)?voluntary_ctxt_switches:/ { s += $2 } END { print s + 0 }')
        total=$((total + n))
    done
    echo "$total"
}

# CPU time (clock ticks) of the processes whose pid files are given.
ticks() {
    local total=0 file pid t
    for file in "$@"; do
        pid=$(cat "$file")
        t=$(awk '{ print $14 + $15 }' "/proc/$pid/stat" 2>/dev/null || echo 0)
        total=$((total + t))
    done
    echo "$total"
}
hz=$(getconf CLK_TCK)
pids=$STATE_DIR/pids
frontends=("$pids/frontend-18801.pid" "$pids/frontend-18802.pid")
# redis-cli --cluster create makes the first three nodes the masters.
masters_pids=("$pids"/redis-1700[012].pid)
replicas_pids=("$pids"/redis-1700[345].pid)
echo "$memory_pid" >"$tmp/memory.pid"

# wrk against URL: prints "requests req_per_s p99_ms non_2xx".
load() {
    local name=$1 url=$2 seconds=$3
    WRK_REPORT=$tmp/$name.json timeout $((seconds + 30)) wrk -t2 -c"$connections" -d"${seconds}s" \
        --latency -s benchmark/wrk/random_ids.lua "$url" -- "$users" >"$tmp/$name.txt"
    jq -r '"\(.requests) \(.requests / (.duration_us / 1e6)) \(.latency_us.p99 / 1000) \(.errors.status)"' "$tmp/$name.json"
}

# Memory the data takes on the masters (the replicas hold as much again).
masters_memory() {
    local port total=0 used startup
    for port in 17000 17001 17002; do
        used=$(redis-cli -p "$port" info memory | tr -d '\r' | awk -F: '$1 == "used_memory" { print $2 }')
        startup=$(redis-cli -p "$port" info memory | tr -d '\r' | awk -F: '$1 == "used_memory_startup" { print $2 }')
        total=$((total + used - startup))
    done
    echo "$total"
}
loaded_memory=$(masters_memory)
if [[ -n $carry ]]; then
    # Progress under the first version, then the same feeds again as a
    # second one: every user with progress gets marks, and every request to
    # the second version is the carried request.
    load warm-up http://127.0.0.1:18801 10 >/dev/null
    timeout 600 deploy/local-cluster.sh publish "$STATE_DIR/snapshot.ffs"
    for port in 18901 18902; do
        for _ in $(seq 300); do
            [[ $(curl -fs "http://127.0.0.1:$port/stats" | jq .storage.version) == 2 ]] && break
            sleep 0.1
        done
    done
    tail -n 1 "$STATE_DIR/logs/redis-load.log" >&2 || true
fi
# What each frontend maps: the snapshot (feeds, ids, offsets, fallback list).
snapshot_bytes=$(stat -c %s "$STATE_DIR/snapshot.ffs")

{
    echo "# Scale-out on loopback, $stamp"
    echo
    echo "\`benchmark/cluster.sh --users $users --duration $duration --rounds $rounds --connections $connections${carry:+ --carry}\`"
    echo "on commit \`$(git rev-parse --short=12 HEAD)\`: $users users x 200 items; Redis Cluster of 3 masters"
    echo "and 3 replicas; wrk -t2 -c$connections, random known users, default size (10)."
    echo "Everything shares $(nproc) cores: compare the ratios."
    echo
    if [[ -n $carry ]]; then
        echo "Over a second version of the same feeds, published after 10 s of wrk gave users progress: every"
        echo "request over Redis is the carried request, one EVALSHA (docs/SCALING.md)."
        echo
    fi
    echo "Round trips / request: the frontend's HINCRBY and EVALSHA per request (it sends nothing else per"
    echo "request). Commands executed / request: every node's INFO commandstats (INFO itself left out),"
    echo "the replicas' copies of each HINCRBY included."
    echo
    if [[ -n ${REDIS_ARGS:-} ]]; then
        echo "Every Redis node started with the extra arguments REDIS_ARGS=\"$REDIS_ARGS\" (deploy/local-cluster.sh)."
        echo
    fi
    echo "HAProxy in ${HAPROXY_MODE:-tcp} mode (deploy/local-cluster.sh: tcp passes bytes after a PROXY"
    echo "protocol v2 header, balancing per connection; http reads each request and writes X-Forwarded-For)."
    echo
    echo "CPU µs / request: user + system time of the feed servers (the in-memory one, or both"
    echo "frontends), of the three Redis masters, of the three replicas, and of HAProxy, over the"
    echo "round, divided by its requests."
    echo
    echo "Commands / master read: the round trips above over the masters' reads of client connections"
    echo "(INFO stats total_reads_processed): how many requests' commands arrive in one read. Context"
    echo "switches / request: voluntary and involuntary, of every thread of the feed server(s) and the"
    echo "six Redis nodes: how often they slept and woke."
    echo
    echo "| round | target | req/s | p99 ms | non-2xx | round trips / request | commands executed / request | commands / master read | context switches / request | server CPU µs / req | masters CPU µs / req | replicas CPU µs / req | HAProxy CPU µs / req |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
} >"$out"

declare -A sum cpu commands
for round in $(seq "$rounds"); do
    for target in memory redis-one haproxy-two; do
        case $target in
            memory) url=http://127.0.0.1:$memory_port ;;
            redis-one) url=http://127.0.0.1:18801 ;;
            haproxy-two) url=http://127.0.0.1:18800 ;;
        esac
        servers=("${frontends[@]}")
        [[ $target == memory ]] && servers=("$tmp/memory.pid")
        # The masters' count: each HINCRBY a frontend sends (the replicas
        # apply copies of them, counted under "commands executed").
        incr_before=$(($(calls hincrby "${masters[@]}") + $(calls evalsha "${masters[@]}")))
        all_before=$(calls all)
        server_before=$(ticks "${servers[@]}")
        masters_before=$(ticks "${masters_pids[@]}")
        replicas_before=$(ticks "${replicas_pids[@]}")
        proxy_before=$(ticks "$pids/haproxy.pid")
        reads_before=$(reads "${masters[@]}")
        switches_before=$(switches "${servers[@]}" "${masters_pids[@]}" "${replicas_pids[@]}")
        read -r requests rps p99 non2xx < <(load "$target-$round" "$url" "$duration")
        ((${requests:-0} > 0)) || { echo "round $round $target: wrk counted no request" >&2; exit 1; }
        per_request() { echo "($2 - $1) * 1000000 / $hz / $requests" | bc -l; }
        server_cpu=$(per_request "$server_before" "$(ticks "${servers[@]}")")
        masters_cpu=$(per_request "$masters_before" "$(ticks "${masters_pids[@]}")")
        replicas_cpu=$(per_request "$replicas_before" "$(ticks "${replicas_pids[@]}")")
        proxy_cpu=$(per_request "$proxy_before" "$(ticks "$pids/haproxy.pid")")
        incr_per=$(echo "($(calls hincrby "${masters[@]}") + $(calls evalsha "${masters[@]}") - $incr_before) / $requests" | bc -l)
        all_per=$(echo "($(calls all) - $all_before) / $requests" | bc -l)
        # The masters' commands from clients per read of a client
        # connection: how deep the frontends' batches arrive.
        master_reads=$(($(reads "${masters[@]}") - reads_before))
        depth=$(echo "$incr_per * $requests / ($master_reads + (${master_reads} == 0))" | bc -l)
        switches_per=$(echo "($(switches "${servers[@]}" "${masters_pids[@]}" "${replicas_pids[@]}") - $switches_before) / $requests" | bc -l)
        printf '| %s | %s | %.0f | %.2f | %s | %.3f | %.3f | %.2f | %.2f | %.1f | %.1f | %.1f | %.1f |\n' "$round" "$target" "$rps" "$p99" \
            "$non2xx" "$incr_per" "$all_per" "$depth" "$switches_per" "$server_cpu" "$masters_cpu" "$replicas_cpu" "$proxy_cpu" >>"$out"
        sum[$target]=$(echo "${sum[$target]:-0} + $rps" | bc -l)
        # Frontend(s) plus every Redis node, balancer left out.
        cpu[$target]=$(echo "${cpu[$target]:-0} + $server_cpu + $masters_cpu + $replicas_cpu" | bc -l)
        commands[$target]=$(echo "${commands[$target]:-0} + $all_per" | bc -l)
        echo "round $round $target: $rps req/s, p99 $p99 ms" >&2
    done
done
{
    echo
    printf 'Mean req/s: memory %.0f, one frontend over Redis %.0f (%.2fx memory), two frontends through HAProxy %.0f (%.2fx memory, %.2fx one frontend).\n' \
        "$(echo "${sum[memory]} / $rounds" | bc -l)" \
        "$(echo "${sum[redis-one]} / $rounds" | bc -l)" \
        "$(echo "${sum[redis-one]} / ${sum[memory]}" | bc -l)" \
        "$(echo "${sum[haproxy-two]} / $rounds" | bc -l)" \
        "$(echo "${sum[haproxy-two]} / ${sum[memory]}" | bc -l)" \
        "$(echo "${sum[haproxy-two]} / ${sum[redis-one]}" | bc -l)"
    echo
    printf 'CPU per request, frontend(s) plus all six Redis nodes (HAProxy left out), against the in-memory server'"'"'s (goal: at most 2x): one frontend %.1f µs = **%.2fx**, two through HAProxy %.1f µs = **%.2fx** (in memory %.1f µs). Redis commands executed per request: %.2f and %.2f.\n' \
        "$(echo "${cpu[redis-one]} / $rounds" | bc -l)" \
        "$(echo "${cpu[redis-one]} / ${cpu[memory]}" | bc -l)" \
        "$(echo "${cpu[haproxy-two]} / $rounds" | bc -l)" \
        "$(echo "${cpu[haproxy-two]} / ${cpu[memory]}" | bc -l)" \
        "$(echo "${cpu[memory]} / $rounds" | bc -l)" \
        "$(echo "${commands[redis-one]} / $rounds" | bc -l)" \
        "$(echo "${commands[haproxy-two]} / $rounds" | bc -l)"
} >>"$out"

used_memory=$(masters_memory)
offsets=0
for port in 17000 17001 17002; do
    offsets=$((offsets + $(redis-cli -p "$port" --scan --pattern 'o:{*}:*' | wc -l)))
done
{
    echo
    printf 'Memory on the 3 masters above their start-up use: %.2f MiB right after the load (the version pointers and description only: no feed is in Redis); %.1f MiB after the rounds above, when %s users had an offset key (%.0f bytes per user with progress). The replicas hold the same again. Each frontend maps the snapshot instead: %.1f MiB (%.0f bytes per user).\n' \
        "$(echo "$loaded_memory / 1048576" | bc -l)" \
        "$(echo "$used_memory / 1048576" | bc -l)" "$offsets" "$(echo "$used_memory / ($offsets + 1)" | bc -l)" \
        "$(echo "$snapshot_bytes / 1048576" | bc -l)" "$(echo "$snapshot_bytes / $users" | bc -l)"
} >>"$out"

# Failover: kill the master on 17000 under load through HAProxy.
storage_errors() {
    local port total=0 n
    for port in 18901 18902; do
        n=$(curl -fs "http://127.0.0.1:$port/metrics" | awk '/^feed_feed_errors_total\{kind="storage"\}/ { print $2 }')
        total=$((total + ${n:-0}))
    done
    echo "$total"
}
WRK_REPORT=$tmp/failover.json timeout $((failover_duration + 30)) wrk -t2 -c"$connections" \
    -d"${failover_duration}s" --latency -s benchmark/wrk/random_ids.lua \
    http://127.0.0.1:18800 -- "$users" >"$tmp/failover.txt" &
wrk_pid=$!
sleep "$kill_after"
before=$(storage_errors)
victim=$(cat "$STATE_DIR/pids/redis-17000.pid")
victim_id=$(redis-cli -p 17000 cluster myid | tr -d '\r')
kill -9 "$victim"
killed=$(date +%s.%N)
first_error= last_error= promoted=
previous=$before
while kill -0 "$wrk_pid" 2>/dev/null; do
    now=$(date +%s.%N)
    errors=$(storage_errors)
    if ((errors > previous)); then
        [[ -z $first_error ]] && first_error=$now
        last_error=$now
    fi
    previous=$errors
    # Promoted: the killed node is marked failed and serves no slot any more.
    if [[ -z $promoted ]]; then
        line=$(redis-cli -p 17001 cluster nodes 2>/dev/null | grep "^$victim_id" || true)
        if [[ $line == *fail* ]] && (($(wc -w <<<"$line") == 8)); then
            promoted=$now
        fi
    fi
    sleep 0.1
done
wait "$wrk_pid" || true
wrk_pid=
after=$(storage_errors)
requests=$(jq .requests "$tmp/failover.json")
non2xx=$(jq .errors.status "$tmp/failover.json")
socket_errors=$(jq '.errors.connect + .errors.read + .errors.write + .errors.timeout' "$tmp/failover.json")
p99=$(jq '.latency_us.p99 / 1000' "$tmp/failover.json")
degraded=$(if [[ -n $first_error ]]; then echo "$last_error - $killed" | bc -l; else echo 0; fi)
{
    echo
    echo "## A master killed under load"
    echo
    echo "wrk through HAProxy for ${failover_duration} s; the master on 17000 killed (SIGKILL) after ${kill_after} s."
    echo
    echo "| requests | non-2xx | socket errors | p99 ms | answers degraded (storage errors) | degraded for, s after the kill | replica promoted, s after the kill |"
    echo "|---:|---:|---:|---:|---:|---:|---:|"
    printf '| %s | %s | %s | %.2f | %s | %.1f | %s |\n' "$requests" "$non2xx" "$socket_errors" "$p99" \
        "$((after - before))" "$degraded" \
        "$(if [[ -n $promoted ]]; then printf '%.1f' "$(echo "$promoted - $killed" | bc -l)"; else echo "not seen"; fi)"
} >>"$out"
cat "$out"
echo "== wrote $out" >&2
