#!/usr/bin/env bash
# Load test of feed-server against a constant-response actix-web "floor".
#
#   benchmark/run.sh            # full run: 5,000,000 users x 200, 3 rounds of 20 s
#   benchmark/run.sh --smoke    # 100,000 users, one round of 3 s, low oha rates
#   benchmark/run.sh --help     # every option
#
# What it does, in order:
#  1. builds the release binaries once (feed-server, feed-floor, feed-report);
#  2. starts feed-server on 127.0.0.1 and times it to its first successful
#     GET /feed/1, then reads its RSS from /proc;
#  3. starts feed-floor with the same workers and a body of the same length
#     as the feed's default answers;
#  4. runs wrk against each (warm-up, then ROUNDS rounds of feed then floor),
#     then once with the mixed workload against the feed;
#  5. runs oha at fixed rates (by default 50% and 80% of the feed's median
#     wrk rate) against each, with latency correction: the tail without
#     coordinated omission;
#  6. writes benchmark/results/MODE-STAMP.json and has feed-report add the
#     summary and write the .md table and the .svg plot beside it.
#
# wrk, oha and the servers share this machine's cores, so the absolute
# numbers describe the whole machine; the feed/floor ratios within one run
# are what can be compared. Everything targets 127.0.0.1, every step has a
# time limit, and the servers it started are stopped on exit.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: benchmark/run.sh [--smoke] [options]

Options (each also settable by the environment variable in brackets;
an option wins over the variable; the defaults of --smoke in parentheses):
  --users N            users in the feed table [BENCH_USERS] 5000000 (100000)
  --feed-len N         items per feed [BENCH_FEED_LEN] 200
  --catalog N          catalog items [BENCH_CATALOG] 10000000
  --max-size N         largest size a request may ask for [BENCH_MAX_SIZE] 200
  --workers N          HTTP workers of both servers, 0 = one per core [BENCH_WORKERS] 0
  --threads N          wrk -t [BENCH_THREADS] 2
  --connections N      wrk -c [BENCH_CONNECTIONS] 200
  --duration S         wrk -d, seconds [BENCH_DURATION] 20 (3)
  --warmup S           unmeasured wrk seconds per server first [BENCH_WARMUP] 5 (1)
  --rounds N           rounds of (feed, floor) [BENCH_ROUNDS] 3 (1)
  --oha-duration S     oha -z, seconds [BENCH_OHA_DURATION] 20 (3)
  --oha-connections N  oha -c [BENCH_OHA_CONNECTIONS] 50 (10)
  --oha-rates "R ..."  fixed oha rates in req/s instead of shares [BENCH_OHA_RATES] ("200 400")
  --oha-shares "S ..." shares of the feed's median wrk rate [BENCH_OHA_SHARES] "0.5 0.8"
  --mixed-unknown PCT  mixed workload: % of unknown users [BENCH_MIXED_UNKNOWN] 5
  --mixed-hot PCT      mixed workload: % of requests on hot users [BENCH_MIXED_HOT] 10
  --mixed-hot-users N  mixed workload: hot users [BENCH_MIXED_HOT_USERS] 100
  --port P             feed-server port, or the next free one [BENCH_PORT] 18080
  --floor-port P       feed-floor port, or the next free one [BENCH_FLOOR_PORT] 18081
  --ready-timeout S    limit for the server to become ready [BENCH_READY_TIMEOUT] 300
  --out DIR            where results go [BENCH_OUT] benchmark/results
  --no-build           use the release binaries already built
  --smoke              the smoke defaults above: a quick check of the whole pipeline
EOF
}

cd "$(dirname "$0")/.."
root=$PWD
command_line="benchmark/run.sh${*:+ $*}"
for var in $(compgen -v BENCH_ || true); do
    command_line="$var=${!var} $command_line"
done

smoke=0
build=1
args=("$@")
for arg in "${args[@]}"; do
    [[ $arg == --smoke ]] && smoke=1
done
if ((smoke)); then
    users=${BENCH_USERS:-100000}
    duration=${BENCH_DURATION:-3}
    warmup=${BENCH_WARMUP:-1}
    rounds=${BENCH_ROUNDS:-1}
    oha_duration=${BENCH_OHA_DURATION:-3}
    oha_connections=${BENCH_OHA_CONNECTIONS:-10}
    oha_rates=${BENCH_OHA_RATES-200 400}
else
    users=${BENCH_USERS:-5000000}
    duration=${BENCH_DURATION:-20}
    warmup=${BENCH_WARMUP:-5}
    rounds=${BENCH_ROUNDS:-3}
    oha_duration=${BENCH_OHA_DURATION:-20}
    oha_connections=${BENCH_OHA_CONNECTIONS:-50}
    oha_rates=${BENCH_OHA_RATES:-}
fi
feed_len=${BENCH_FEED_LEN:-200}
catalog=${BENCH_CATALOG:-10000000}
max_size=${BENCH_MAX_SIZE:-200}
workers=${BENCH_WORKERS:-0}
threads=${BENCH_THREADS:-2}
connections=${BENCH_CONNECTIONS:-200}
oha_shares=${BENCH_OHA_SHARES:-0.5 0.8}
mixed_unknown=${BENCH_MIXED_UNKNOWN:-5}
mixed_hot=${BENCH_MIXED_HOT:-10}
mixed_hot_users=${BENCH_MIXED_HOT_USERS:-100}
port=${BENCH_PORT:-18080}
floor_port=${BENCH_FLOOR_PORT:-18081}
ready_timeout=${BENCH_READY_TIMEOUT:-300}
out_dir=${BENCH_OUT:-benchmark/results}

while (($#)); do
    case $1 in
        --smoke) ;;
        --no-build) build=0 ;;
        --users) users=$2; shift ;;
        --feed-len) feed_len=$2; shift ;;
        --catalog) catalog=$2; shift ;;
        --max-size) max_size=$2; shift ;;
        --workers) workers=$2; shift ;;
        --threads) threads=$2; shift ;;
        --connections) connections=$2; shift ;;
        --duration) duration=$2; shift ;;
        --warmup) warmup=$2; shift ;;
        --rounds) rounds=$2; shift ;;
        --oha-duration) oha_duration=$2; shift ;;
        --oha-connections) oha_connections=$2; shift ;;
        --oha-rates) oha_rates=$2; shift ;;
        --oha-shares) oha_shares=$2; shift ;;
        --mixed-unknown) mixed_unknown=$2; shift ;;
        --mixed-hot) mixed_hot=$2; shift ;;
        --mixed-hot-users) mixed_hot_users=$2; shift ;;
        --port) port=$2; shift ;;
        --floor-port) floor_port=$2; shift ;;
        --ready-timeout) ready_timeout=$2; shift ;;
        --out) out_dir=$2; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

for n in users feed_len catalog max_size workers threads connections duration warmup \
    rounds oha_duration oha_connections mixed_unknown mixed_hot mixed_hot_users port \
    floor_port ready_timeout; do
    [[ ${!n} =~ ^[0-9]+$ ]] || { echo "run.sh: $n must be a whole number, not '${!n}'" >&2; exit 2; }
done
((users > 0 && duration > 0 && rounds > 0 && threads > 0 && connections >= threads)) || {
    echo "run.sh: users, duration, rounds and threads must be positive, connections >= threads" >&2
    exit 2
}

mode=$([[ $smoke == 1 ]] && echo smoke || echo full)
cores=$(nproc)
effective_workers=$((workers == 0 ? cores : workers))
tty=0
[[ -t 2 ]] && tty=1

log() { printf '%s\n' "$*" >&2; }
now_ns() { date +%s%N; }

# ---------------------------------------------------------------- clean-up
tmp=$(mktemp -d "${TMPDIR:-/tmp}/feed-bench.XXXXXX")
# The processes this script started and has not reaped yet: the two
# servers, and the load generator of the moment. Only these are stopped.
pids=()
feed_pid=
floor_pid=
load_pid=

# True while PID is a running child of this script (not exited, not reused).
ours() {
    local _pid _comm state ppid _rest
    [[ -r /proc/$1/stat ]] || return 1
    read -r _pid _comm state ppid _rest 2>/dev/null <"/proc/$1/stat" || return 1
    [[ $ppid == "$$" && $state != Z ]]
}

stop() {
    local pid
    for pid in "$@"; do
        ours "$pid" && kill -TERM "$pid" 2>/dev/null || true
    done
    # feed-server drains on the first signal and stops at the second; no
    # request is in flight by now, so send both, then allow 5 s before
    # stopping whatever is left hard.
    sleep 0.2
    for pid in "$@"; do
        ours "$pid" && kill -TERM "$pid" 2>/dev/null || true
    done
    local waited=0
    for pid in "$@"; do
        while ours "$pid" && ((waited < 50)); do
            sleep 0.1
            waited=$((waited + 1))
        done
        ours "$pid" && kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}

cleanup() {
    local code=$?
    trap - EXIT INT TERM
    ((tty)) && printf '\r\033[K' >&2
    [[ -n $load_pid ]] && pids+=("$load_pid")
    ((${#pids[@]})) && stop "${pids[@]}"
    if ((code != 0)) && [[ -s $tmp/feed.log ]]; then
        log "run.sh: failed; the last lines of the feed-server log:"
        tail -n 5 "$tmp/feed.log" >&2 || true
    fi
    rm -rf "$tmp"
    exit "$code"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

die() {
    ((tty)) && printf '\r\033[K' >&2
    log "run.sh: $*"
    exit 1
}

# A one-line progress report, rewritten in place on a terminal; in a log,
# one line every 10 s at most.
last_progress=0
progress() {
    if ((tty)); then
        printf '\r\033[K  %s' "$*" >&2
    elif (($(date +%s) - last_progress >= 10)); then
        last_progress=$(date +%s)
        log "  $*"
    fi
}
progress_done() {
    ((tty)) && printf '\r\033[K' >&2
    last_progress=0
    log "  $*"
}

# Waits for a background load generator, counting down its seconds.
wait_for() {
    local pid=$1 seconds=$2 label=$3 start
    start=$(date +%s)
    while kill -0 "$pid" 2>/dev/null; do
        local left=$((seconds - ($(date +%s) - start)))
        ((left < 0)) && left=0
        progress "$label: ${left} s left"
        sleep 0.5
    done
    local status=0
    wait "$pid" || status=$?
    load_pid=
    ((status == 0)) || die "$label failed (exit $status): $(tail -n 3 "$tmp/last.txt" 2>/dev/null)"
}

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
hwm_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }

# ---------------------------------------------------------------- tools
for tool in wrk curl jq timeout; do
    command -v "$tool" >/dev/null || die "$tool is missing (apt-get install -y wrk curl jq coreutils)"
done
if ! command -v oha >/dev/null; then
    [[ -x $HOME/.cargo/bin/oha ]] && export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v oha >/dev/null; then
    log "== oha is missing: cargo install oha --locked (several minutes, once)"
    cargo install oha --locked >&2
    export PATH="$HOME/.cargo/bin:$PATH"
fi
# The first free port at or above the one asked for, so that a server left
# running on the default does not stop the run.
free_port_from() {
    local p=$1 avoid=${2:-0}
    while listening "$p" || ((p == avoid)); do
        ((p < $1 + 100)) || die "no free port in $1..$(($1 + 100)) on 127.0.0.1"
        p=$((p + 1))
    done
    echo "$p"
}
port=$(free_port_from "$port")
floor_port=$(free_port_from "$floor_port" "$port")

if ((build)); then
    log "== cargo build --release --locked -p feed-server -p feed-bench --bins"
    cargo build --release --locked -p feed-server -p feed-bench --bins >&2
fi
bin=$root/target/release
for b in feed-server feed-floor feed-report; do
    [[ -x $bin/$b ]] || die "$bin/$b is missing: run without --no-build"
done

mkdir -p "$out_dir"
date_utc=$(date -u +%Y-%m-%dT%H:%M:%SZ)
stamp=$(date -u +%Y%m%dT%H%M%SZ)
result=$out_dir/$mode-$stamp.json

log "== $mode run: $users users x $feed_len, $effective_workers workers, wrk -t$threads -c$connections -d${duration}s, $rounds round(s)"

# ---------------------------------------------------------------- feed-server
# The admin listener (metrics, profiler) takes any free loopback port, so
# that a server already running on the default one does not stop the run.
log "== starting feed-server on 127.0.0.1:$port"
feed_url=http://127.0.0.1:$port
: >"$tmp/feed.log"
start_ns=$(now_ns)
FEED__SERVER__HOST=127.0.0.1 FEED__SERVER__PORT=$port FEED__SERVER__WORKERS=$workers \
    FEED__DATA__USERS=$users FEED__DATA__FEED_LEN=$feed_len FEED__DATA__CATALOG_SIZE=$catalog \
    FEED__API__DEFAULT_SIZE=10 FEED__API__MAX_SIZE=$max_size FEED__LOG__FORMAT=json \
    FEED__ADMIN__PORT=0 \
    "$bin/feed-server" --config config/default.toml >"$tmp/feed.log" 2>&1 &
feed_pid=$!
pids+=("$feed_pid")

# The port is bound before the data is generated, but nothing is served
# until then: wait for the ready line (showing the generator's progress),
# then for the first successful answer, which is what "ready" means here.
deadline=$(($(date +%s) + ready_timeout))
while ! grep -q '"feed-server ready"' "$tmp/feed.log"; do
    kill -0 "$feed_pid" 2>/dev/null || die "feed-server exited before it was ready"
    (($(date +%s) < deadline)) || die "feed-server not ready after $ready_timeout s"
    percent=$(grep '"generating feeds"' "$tmp/feed.log" | tail -n 1 | jq -r '.percent // 0' 2>/dev/null || true)
    progress "generating $users feeds: ${percent:-0}% ($((($(now_ns) - start_ns) / 1000000000)) s)"
    # Each pass forks grep, tail and jq; every 20 ms that took enough of the
    # two cores from the generator to stretch a 3.3 s start to 4.6-5.8 s.
    sleep 0.25
done
until curl -fsS -o /dev/null --max-time 2 "$feed_url/feed/1" 2>/dev/null; do
    kill -0 "$feed_pid" 2>/dev/null || die "feed-server exited before it answered"
    (($(date +%s) < deadline)) || die "feed-server did not answer within $ready_timeout s"
    sleep 0.01
done
ready_ms=$((($(now_ns) - start_ns) / 1000000))
generation_ms=$(grep '"feed-server ready"' "$tmp/feed.log" | head -n 1 | jq -r '.generation_ms // 0')
rss_ready=$(rss_kib "$feed_pid")
progress_done "ready in $ready_ms ms (generation $generation_ms ms), RSS $((rss_ready / 1024)) MiB"

# The floor copies the mean length of default answers (ids of 7 or 8 digits).
total=0
for user in $(seq 2 21); do
    size=$(curl -fsS --max-time 5 -o "$tmp/body" -w '%{size_download}' "$feed_url/feed/$user") ||
        die "GET /feed/$user failed"
    [[ $(jq length "$tmp/body") == 10 ]] || die "GET /feed/$user is not a 10-item array: $(head -c 200 "$tmp/body")"
    total=$((total + size))
done
body_bytes=$(((total + 10) / 20))

# ---------------------------------------------------------------- feed-floor
log "== starting feed-floor on 127.0.0.1:$floor_port ($body_bytes-byte body)"
floor_url=http://127.0.0.1:$floor_port
"$bin/feed-floor" --host 127.0.0.1 --port "$floor_port" --workers "$workers" \
    --body-bytes "$body_bytes" >"$tmp/floor.log" 2>&1 &
floor_pid=$!
pids+=("$floor_pid")
floor_deadline=$(($(date +%s) + 30))
until curl -fsS -o /dev/null --max-time 2 "$floor_url/feed/1" 2>/dev/null; do
    kill -0 "$floor_pid" 2>/dev/null || die "feed-floor exited: $(cat "$tmp/floor.log")"
    (($(date +%s) < floor_deadline)) || die "feed-floor did not answer within 30 s"
    sleep 0.02
done

# ---------------------------------------------------------------- wrk
# run_wrk NAME URL SECONDS SCRIPT ARGS...: writes $tmp/NAME.json (numbers
# plus wrk's text output).
run_wrk() {
    local name=$1 url=$2 seconds=$3 script=$4
    shift 4
    WRK_REPORT=$tmp/$name.raw.json timeout --kill-after=5 $((seconds + 30)) \
        wrk -t"$threads" -c"$connections" -d"${seconds}s" --latency -s "$script" "$url" -- "$@" \
        >"$tmp/$name.txt" 2>&1 &
    load_pid=$!
    ln -sf "$tmp/$name.txt" "$tmp/last.txt"
    wait_for "$load_pid" "$seconds" "wrk $name"
    [[ -s $tmp/$name.raw.json ]] || die "wrk $name wrote no report: $(cat "$tmp/$name.txt")"
    jq --rawfile text "$tmp/$name.txt" '. + {text: $text}' "$tmp/$name.raw.json" >"$tmp/$name.json"
    local rps errors
    rps=$(jq -r '(.requests * 1e6 / .duration_us) | floor' "$tmp/$name.json")
    errors=$(jq -r '.errors | add' "$tmp/$name.json")
    progress_done "wrk $name: $rps req/s, p50 $(jq -r .latency_us.p50 "$tmp/$name.json") µs, p99 $(jq -r .latency_us.p99 "$tmp/$name.json") µs, errors $errors"
}

random_ids=benchmark/wrk/random_ids.lua
if ((warmup > 0)); then
    log "== warm-up, $warmup s each (not recorded)"
    run_wrk warmup-feed "$feed_url" "$warmup" "$random_ids" "$users"
    run_wrk warmup-floor "$floor_url" "$warmup" "$random_ids" "$users"
fi

log "== $rounds round(s) of wrk: feed, then floor"
for round in $(seq 1 "$rounds"); do
    run_wrk "round-$round-feed" "$feed_url" "$duration" "$random_ids" "$users"
    run_wrk "round-$round-floor" "$floor_url" "$duration" "$random_ids" "$users"
done
rss_after_wrk=$(rss_kib "$feed_pid")

log "== mixed workload against the feed"
run_wrk mixed "$feed_url" "$duration" benchmark/wrk/mixed.lua \
    "$users" "$max_size" "$mixed_unknown" "$mixed_hot" "$mixed_hot_users"

rounds_json=$(for round in $(seq 1 "$rounds"); do
    for target in feed floor; do
        jq --argjson round "$round" --arg target "$target" \
            '{round: $round, target: $target, wrk: .}' "$tmp/round-$round-$target.json"
    done
done | jq -s .)

# ---------------------------------------------------------------- oha
# User ids for oha: a regex over decimal strings with leading zeros (which
# the server accepts). For users = D x 10^K it covers 0..users-1 exactly;
# otherwise 0..D x 10^K - 1, all of them known users.
first=${users:0:1}
rest=$((${#users} - 1))
if ((rest == 0)); then
    regex="[0-$((first - 1))]"
elif ((first == 1)); then
    regex="0[0-9]{$rest}"
else
    regex="[0-$((first - 1))][0-9]{$rest}"
fi

median_rps=$(jq -s 'map(.requests * 1e6 / .duration_us) | sort
    | if length % 2 == 1 then .[length / 2 | floor] else (.[length / 2 - 1] + .[length / 2]) / 2 end' \
    $(for round in $(seq 1 "$rounds"); do echo "$tmp/round-$round-feed.json"; done))
oha_plan=()
if [[ -n $oha_rates ]]; then
    for r in $oha_rates; do oha_plan+=("$r:null"); done
else
    for s in $oha_shares; do
        oha_plan+=("$(jq -n --argjson m "$median_rps" --argjson s "$s" '($m * $s) | floor'):$s")
    done
fi

oha_runs=()
for plan in "${oha_plan[@]}"; do
    rate=${plan%%:*}
    share=${plan#*:}
    ((rate > 0)) || die "oha rate $rate is not positive"
    for target in feed floor; do
        url=$([[ $target == feed ]] && echo "$feed_url" || echo "$floor_url")
        name=oha-$target-$rate
        timeout --kill-after=5 $((oha_duration + 30)) \
            oha --no-tui --output-format json -o "$tmp/$name.raw.json" -w \
            -z "${oha_duration}s" -q "$rate" --latency-correction -c "$oha_connections" \
            --rand-regex-url "$url/feed/$regex" >"$tmp/$name.txt" 2>&1 &
        load_pid=$!
        ln -sf "$tmp/$name.txt" "$tmp/last.txt"
        wait_for "$load_pid" "$oha_duration" "oha $target at $rate req/s"
        jq --arg target "$target" --argjson rate "$rate" --argjson share "$share" '{
                target: $target, rate: $rate, share: $share,
                rps: .summary.requestsPerSec,
                success_rate: .summary.successRate,
                status: .statusCodeDistribution,
                errors: .errorDistribution,
                latency_us: {
                    p50: (.latencyPercentiles.p50 * 1e6),
                    p99: (.latencyPercentiles.p99 * 1e6),
                    p999: (.latencyPercentiles["p99.9"] * 1e6)
                }
            }' "$tmp/$name.raw.json" >"$tmp/$name.json"
        oha_runs+=("$tmp/$name.json")
        progress_done "oha $target at $rate req/s: p50 $(jq -r '.latency_us.p50 | floor' "$tmp/$name.json") µs, p99 $(jq -r '.latency_us.p99 | floor' "$tmp/$name.json") µs, p99.9 $(jq -r '.latency_us.p999 | floor' "$tmp/$name.json") µs"
    done
done
oha_json=$(if ((${#oha_runs[@]})); then jq -s . "${oha_runs[@]}"; else echo '[]'; fi)

rss_end=$(rss_kib "$feed_pid")
hwm_end=$(hwm_kib "$feed_pid")
floor_rss_end=$(rss_kib "$floor_pid")

# ---------------------------------------------------------------- results
dirty=false
[[ -n $(git status --porcelain --untracked-files=no 2>/dev/null) ]] && dirty=true
jq -n \
    --arg mode "$mode" --arg command "$command_line" \
    --argjson nproc "$cores" \
    --argjson mem "$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)" \
    --arg kernel "$(uname -r)" \
    --arg cpu "$(grep -m 1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//' || echo unknown)" \
    --arg commit "$(git rev-parse HEAD 2>/dev/null || echo unknown)" --argjson dirty "$dirty" \
    --arg date "$date_utc" \
    --argjson users "$users" --argjson feed_len "$feed_len" --argjson catalog "$catalog" \
    --argjson max_size "$max_size" --argjson workers "$effective_workers" \
    --argjson threads "$threads" --argjson connections "$connections" \
    --argjson duration "$duration" --argjson warmup "$warmup" --argjson rounds "$rounds" \
    --argjson oha_duration "$oha_duration" --argjson oha_connections "$oha_connections" \
    --arg regex "$regex" --argjson mixed_unknown "$mixed_unknown" \
    --argjson mixed_hot "$mixed_hot" --argjson mixed_hot_users "$mixed_hot_users" \
    --argjson ready_ms "$ready_ms" --argjson generation_ms "$generation_ms" \
    --argjson rss_ready "$rss_ready" --argjson rss_after_wrk "$rss_after_wrk" \
    --argjson rss_end "$rss_end" --argjson hwm_end "$hwm_end" \
    --argjson body_bytes "$body_bytes" --argjson floor_rss_end "$floor_rss_end" \
    --argjson rounds_json "$rounds_json" --slurpfile mixed "$tmp/mixed.json" \
    --argjson oha "$oha_json" \
    '{
        mode: $mode, command: $command,
        machine: {nproc: $nproc, mem_total_kib: $mem, kernel: $kernel, cpu: $cpu,
                  git_commit: $commit, git_dirty: $dirty, date: $date},
        config: {users: $users, feed_len: $feed_len, catalog_size: $catalog,
                 max_size: $max_size, workers: $workers, wrk_threads: $threads,
                 wrk_connections: $connections, duration_s: $duration, warmup_s: $warmup,
                 rounds: $rounds, oha_duration_s: $oha_duration,
                 oha_connections: $oha_connections, oha_url_regex: $regex,
                 mixed_unknown_pct: $mixed_unknown, mixed_hot_pct: $mixed_hot,
                 mixed_hot_users: $mixed_hot_users},
        server: {ready_ms: $ready_ms, generation_ms: $generation_ms,
                 rss_ready_kib: $rss_ready, rss_after_wrk_kib: $rss_after_wrk,
                 rss_end_kib: $rss_end, hwm_end_kib: $hwm_end,
                 body_bytes: $body_bytes, floor_rss_end_kib: $floor_rss_end},
        rounds: $rounds_json, mixed: $mixed[0], oha: $oha
    }' >"$result"

"$bin/feed-report" "$result" --print
log "== wrote $result and its .md and .svg"
