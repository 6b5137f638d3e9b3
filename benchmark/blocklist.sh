#!/usr/bin/env bash
# How long a takedown takes to reach every frontend in Redis mode
# (docs/BENCHMARKS.md, "A takedown reaching the other frontend"):
#
#   benchmark/blocklist.sh               # 20 changes, 10,000 users
#   benchmark/blocklist.sh --changes 50
#
# Brings up deploy/local-cluster.sh (6 Redis nodes, 2 frontends, HAProxy)
# in its own state folder, then, for each change, POSTs one item to the
# first frontend's /admin/blocklist and reads the second frontend's
# GET /admin/blocklist (its live copy: the one its requests check; /stats
# is a snapshot refreshed every second) every 5 ms until it holds the item:
# the time from the POST's answer to that read, which `redis.poll_ms` (250
# ms by default) bounds. Everything targets 127.0.0.1 and stops on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

changes=20
users=10000
while (($#)); do
    case $1 in
        --changes) changes=$2; shift 2 ;;
        --users) users=$2; shift 2 ;;
        -h|--help) sed -n 2,14p "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
need=()
for tool in curl jq redis-server redis-cli haproxy; do
    command -v "$tool" >/dev/null || need+=("$tool")
done
if ((${#need[@]})); then
    apt-get update -qq
    apt-get install -y -qq curl jq redis-server redis-tools haproxy
fi
timeout 1200 cargo build --release --locked -p feed-server >&2

export STATE_DIR=target/bench-blocklist
export USERS=$users
trap 'deploy/local-cluster.sh down >/dev/null 2>&1 || true' EXIT
deploy/local-cluster.sh down >/dev/null 2>&1 || true
timeout 300 deploy/local-cluster.sh up >&2

stamp=$(date -u +%Y%m%dT%H%M%SZ)
out=benchmark/results/blocklist-$stamp.md
# Item ids far from the catalog's, one a change.
now_ms() { date +%s%3N; }
times=()
for i in $(seq "$changes"); do
    item=$((4000000000 + i))
    answer=$(curl -fs -X POST -H 'Content-Type: application/json' \
        -d "{\"add\": [$item]}" http://127.0.0.1:18901/admin/blocklist)
    posted=$(now_ms)
    [[ $(jq .blocked <<<"$answer") == "$i" ]] || { echo "unexpected answer $answer" >&2; exit 1; }
    seen=
    for _ in $(seq 400); do
        if [[ $(curl -fs http://127.0.0.1:18902/admin/blocklist | jq "any(.items[]; . == $item)") == true ]]; then
            seen=$(now_ms)
            break
        fi
        sleep 0.005
    done
    [[ -n $seen ]] || { echo "change $i not seen within 2 s" >&2; exit 1; }
    times+=($((seen - posted)))
done
sorted=$(printf '%s\n' "${times[@]}" | sort -n)
median=$(sed -n "$(((changes + 1) / 2))p" <<<"$sorted")
{
    echo "# A takedown reaching the other frontend, $stamp"
    echo
    echo "\`benchmark/blocklist.sh --changes $changes --users $users\` on commit \`$(git rev-parse --short=12 HEAD)\`:"
    echo "one item POSTed to the first frontend's admin listener, the second frontend's GET /admin/blocklist"
    echo "read every 5 ms until it holds the item; redis.poll_ms is 250."
    echo
    echo "| changes | min ms | median ms | max ms |"
    echo "|---:|---:|---:|---:|"
    echo "| $changes | $(head -n 1 <<<"$sorted") | $median | $(tail -n 1 <<<"$sorted") |"
    echo
    echo "Each, in ms: ${times[*]}"
} >"$out"
cat "$out"
echo "== wrote $out" >&2
