#!/usr/bin/env bash
# What a swap costs when it carries what the version before gave (no item
# is given twice across data versions; docs/SNAPSHOT.md), through the real
# binary on 127.0.0.1:
#
#   benchmark/carry.sh                     # 5,000,000 users x 200 items
#   benchmark/carry.sh --users 500000      # a quicker look
#
#  1. writes two synthetic snapshots of the same users (seeds 1 and 2,
#     items from a catalog of --catalog: the feeds overlap, as one day's
#     ranking overlaps the last);
#  2. serves the first with durable progress and asks for every even user
#     in turn, pages of 10 (wrk, benchmark/wrk/every_other_user.lua), for as
#     long as it takes to ask each about once or twice: half the users have
#     progress;
#  3. POST /admin/reload of the second, timed (curl), with the server's own
#     log of the load, the carry before the swap and the sealing after it,
#     and its resident memory before and after;
#  4. asks the even users again under the second, then the same for
#     POST /admin/rollback.
# Everything has a time limit; the server is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

users=5000000
feed_len=200
catalog=1000
data=${BENCH_DATA:-/tmp/feed-bench-carry}
server=${BENCH_FEED_BIN:-target/release/feed-server}
while (($#)); do
    case $1 in
        --users) users=$2; shift 2 ;;
        --feed-len) feed_len=$2; shift 2 ;;
        --catalog) catalog=$2; shift 2 ;;
        --data) data=$2; shift 2 ;;
        --feed-bin) server=$2; shift 2 ;;
        -h|--help) sed -n 2,18p "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
for tool in wrk curl; do
    command -v "$tool" >/dev/null || { apt-get update -qq && apt-get install -y -qq "$tool"; }
done
[[ -x $server ]] || timeout 1200 cargo build --release --locked -p feed-server >&2
config=config/default.toml
port=18095
admin_port=19095
mkdir -p "$data"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
out=benchmark/results/carry-$stamp.md
pid=
cleanup() { [[ -n $pid ]] && kill "$pid" 2>/dev/null || true; }
trap cleanup EXIT

synthetic=(FEED__DATA__USERS="$users" FEED__DATA__FEED_LEN="$feed_len" FEED__DATA__CATALOG_SIZE="$catalog")
for seed in 1 2; do
    snap=$data/v$seed-$users-$feed_len-$catalog.snap
    [[ -f $snap ]] && continue
    echo "== writing $snap" >&2
    env "${synthetic[@]}" FEED__DATA__SEED=$seed timeout 1800 "$server" --config "$config" \
        import --synthetic --output "$snap" >&2
done
first=$data/v1-$users-$feed_len-$catalog.snap
second=$data/v2-$users-$feed_len-$catalog.snap
cat "$first" "$second" > /dev/null   # in the page cache, as after an import

rm -rf "$data/progress"
env FEED__SERVER__PORT=$port FEED__ADMIN__PORT=$admin_port FEED__SERVER__HOST=127.0.0.1 \
    FEED__SERVER__SHUTDOWN_DELAY_MS=0 FEED__LOG__FORMAT=json FEED__DATA__SOURCE=snapshot \
    FEED__DATA__SNAPSHOT="$first" FEED__PROGRESS__PATH="$data/progress" \
    "$server" --config "$config" > "$data/server.log" 2>&1 &
pid=$!
deadline=$((SECONDS + 300))
until curl -sf -o /dev/null "http://127.0.0.1:$port/readyz"; do
    ((SECONDS < deadline)) || { echo "server not ready" >&2; exit 1; }
    kill -0 "$pid" || { tail -5 "$data/server.log" >&2; exit 1; }
    sleep 0.05
done

# ask NAME: every even user asked in turn for a while; sets `requests`.
ask() {
    echo "== asking every even user ($1)" >&2
    local seconds=$((users / 2 / 50000 + 5))
    timeout $((seconds + 60)) wrk -t2 -c64 -d"${seconds}s" -s benchmark/wrk/every_other_user.lua \
        "http://127.0.0.1:$port" -- "$users" 2 > "$data/wrk-$1.txt"
    requests=$(awk '/requests in/ {print $1}' "$data/wrk-$1.txt")
    ((requests >= users / 2)) || { echo "only $requests requests: not every even user was asked" >&2; exit 1; }
}
ask first
first_requests=$requests

# mawk prints large products in exponent form: the kB are multiplied here.
rss() { echo $(($(awk '/^VmRSS/ {print $2}' "/proc/$pid/status") * 1024)); }
# Resident bytes of the server's mappings of files whose name ends with $1
# (the marks' shadow and late bits: only the pages touched are resident).
mapped() {
    awk -v suffix="$1" '/^[0-9a-f]+-[0-9a-f]+ / { on = ($NF ~ suffix "$") }
        on && /^Rss:/ { kb += $2 } END { print kb * 1024 }' "/proc/$pid/smaps"
}
# change NAME PATH BODY: POST PATH with BODY on the admin listener; prints
# "seconds rss_before rss_after".
change() {
    local before after seconds
    before=$(rss)
    seconds=$(timeout 600 curl -sf -o "$data/$1.json" -w '%{time_total}' -X POST \
        -H 'content-type: application/json' --data "$3" "http://127.0.0.1:$admin_port$2")
    after=$(rss)
    echo "$seconds $before $after $(mapped -given.bin) $(mapped -late.bin)"
}
read -r reload_s reload_before reload_after reload_shadow reload_late <<<"$(change reload /admin/reload "{\"path\": \"$second\"}")"
ask second
second_requests=$requests
read -r rollback_s rollback_before rollback_after rollback_shadow rollback_late <<<"$(change rollback /admin/rollback '')"

# The server's own account of each swap, from its log.
field() { python3 - "$data/server.log" "$1" "$2" "$3" <<'PY'
import json, sys
path, msg, key, nth = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
hits = [json.loads(l) for l in open(path) if l.startswith("{") and json.loads(l).get("msg") == msg]
print(hits[nth].get(key, "") if len(hits) > nth else "")
PY
}
mib() { echo "scale=1; $1 / 1048576" | bc; }
{
    echo "# Carrying what was given across a swap, $stamp"
    echo
    echo "\`benchmark/carry.sh --users $users --feed-len $feed_len --catalog $catalog\` on commit"
    echo "\`$(git rev-parse --short=12 HEAD)\`: two synthetic snapshots of $users users x $feed_len items"
    echo "(seeds 1 and 2, catalog $catalog), durable progress. Before each swap wrk asked for every"
    echo "even user in turn, pages of 10: $first_requests requests under the first snapshot (about"
    echo "$((first_requests * 2 / users)) pages an even user), then $second_requests under the second"
    echo "before the rollback. Times are the admin request's (curl), and the server's log of its parts;"
    echo "memory is the server's resident set. The marks: the rows (in memory, their size from the"
    echo "log) and the resident pages of the shadow and late-bit files (from /proc/PID/smaps)."
    echo
    echo "| change | request s | load ms | users with progress | positions marked | carry ms (before the swap) | users moved meanwhile | seal ms (after it) | RSS before MiB | RSS after MiB | added MiB |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    carried='carried the items given under the version served before'

    echo "| reload | $reload_s | $(field reloaded load_ms 0) | $(field 'carried the items given under the version served before' users_with_progress 0) | $(field 'carried the items given under the version served before' positions_marked 0) | $(field 'carried the items given under the version served before' ms 0) | $(field 'sealed the version served before' users_moved_meanwhile 0) | $(field 'sealed the version served before' ms 0) | $(mib "$reload_before") | $(mib "$reload_after") | $(mib $((reload_after - reload_before))) |"
    echo "| rollback | $rollback_s | - | $(field 'carried the items given under the version served before' users_with_progress 1) | $(field 'carried the items given under the version served before' positions_marked 1) | $(field 'carried the items given under the version served before' ms 1) | $(field 'sealed the version served before' users_moved_meanwhile 1) | $(field 'sealed the version served before' ms 1) | $(mib "$rollback_before") | $(mib "$rollback_after") | $(mib $((rollback_after - rollback_before))) |"
    echo
    echo "| change | users with marks | rows MiB | shadow resident MiB | late bits resident MiB |"
    echo "|---|---:|---:|---:|---:|"
    echo "| reload | $(field "$carried" users_with_marks 0) | $(mib "$(field "$carried" marks_bytes 0)") | $(mib "$reload_shadow") | $(mib "$reload_late") |"
    echo "| rollback | $(field "$carried" users_with_marks 1) | $(mib "$(field "$carried" marks_bytes 1)") | $(mib "$rollback_shadow") | $(mib "$rollback_late") |"
} > "$out"
cat "$out"
