#!/usr/bin/env bash
# Load test of feed-server against a constant-response actix-web "floor".
#
#   benchmark/run.sh              # full run: 5,000,000 users x 200, 3 rounds of 20 s
#   benchmark/run.sh --smoke      # 100,000 users, short rounds, low oha rates
#   benchmark/run.sh --isolated   # only the pinned rounds and callgrind
#   benchmark/run.sh --help       # every option
#
# It has three parts; each writes its section of one results file.
#
# Shared cores (the default; --no-shared leaves it out):
#  1. builds the release binaries once (feed-server, feed-floor, feed-report);
#  2. starts feed-server on 127.0.0.1 and times it to its first successful
#     GET /feed/1, then reads its RSS from /proc;
#  3. starts feed-floor with the same workers and a body of the same length
#     as the feed's default answers;
#  4. runs wrk against each (warm-up, then ROUNDS rounds of feed then floor),
#     then once with the mixed workload against the feed;
#  5. runs oha at fixed rates (by default 50% and 80% of the feed's median
#     wrk rate) against each, with latency correction: the tail without
#     coordinated omission.
#  wrk, oha and the servers share this machine's cores, so the absolute
#  numbers describe the whole machine; the feed/floor ratios within one run
#  are what can be compared.
#
# Pinned (--pinned): each server with one worker under `taskset -c` on one
# CPU, wrk (one thread) under `taskset -c` on another, so the load generator
# no longer takes the server's core; ROUNDS rounds of feed then floor.
#
# Callgrind (--callgrind): each server with one worker under valgrind
# --tool=callgrind, instrumentation off until it is warmed up, then on for
# exactly N keep-alive requests from one curl: instructions per request,
# the same whatever else the machine does.
#
# In every wrk round, the server's CPU time (utime + stime of
# /proc/PID/stat) is read before and after, and divided by the requests wrk
# counted: server CPU time per request.
#
# Then it writes benchmark/results/MODE[-LABEL]-STAMP.json and has
# feed-report add the summary and write the .md table and the .svg plot
# beside it. Everything targets 127.0.0.1, every step has a time limit, and
# the servers it started are stopped on exit.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: benchmark/run.sh [--smoke] [options]

Parts (the smoke run does all three, at its small sizes):
  --pinned             also the pinned rounds: each server with 1 worker on
                       --server-cpu, wrk -t1 on --load-cpu [BENCH_PINNED=1]
  --callgrind          also instructions per request under valgrind's
                       callgrind (installed with apt-get when missing)
                       [BENCH_CALLGRIND=1]
  --no-shared          leave out the shared-core part (wrk rounds, mixed
                       workload, oha) [BENCH_SHARED=0]
  --isolated           --pinned --callgrind --no-shared
  --no-pinned, --no-callgrind   leave them out of --smoke

Options (each also settable by the environment variable in brackets;
an option wins over the variable; the defaults of --smoke in parentheses):
  --users N            users in the feed table [BENCH_USERS] 5000000 (100000)
  --feed-len N         items per feed [BENCH_FEED_LEN] 200
  --catalog N          catalog items [BENCH_CATALOG] 10000000
  --max-size N         largest size a request may ask for [BENCH_MAX_SIZE] 200
  --workers N          HTTP workers of both servers, 0 = one per core [BENCH_WORKERS] 0
  --threads N          wrk -t [BENCH_THREADS] 2
  --connections N      wrk -c [BENCH_CONNECTIONS] 200
  --duration S         wrk -d, seconds, shared and pinned [BENCH_DURATION] 20 (3)
  --warmup S           unmeasured wrk seconds per server first [BENCH_WARMUP] 5 (1)
  --rounds N           rounds of (feed, floor), shared and pinned [BENCH_ROUNDS] 3 (1)
  --oha-duration S     oha -z, seconds [BENCH_OHA_DURATION] 20 (3)
  --oha-connections N  oha -c [BENCH_OHA_CONNECTIONS] 50 (10)
  --oha-rates "R ..."  fixed oha rates in req/s instead of shares [BENCH_OHA_RATES] ("200 400")
  --oha-shares "S ..." shares of the feed's median wrk rate [BENCH_OHA_SHARES] "0.5 0.8"
  --mixed-unknown PCT  mixed workload: % of unknown users [BENCH_MIXED_UNKNOWN] 5
  --mixed-hot PCT      mixed workload: % of requests on hot users [BENCH_MIXED_HOT] 10
  --mixed-hot-users N  mixed workload: hot users [BENCH_MIXED_HOT_USERS] 100
  --pinned-connections N  wrk -c of the pinned rounds [BENCH_PINNED_CONNECTIONS] 50
  --idle-below PCT     before each pinned wrk run, wait until the machine's CPUs
                       were less than PCT% busy over 2 s (0 = do not wait)
                       [BENCH_IDLE_BELOW] 0
  --idle-timeout S     at most this long in all for those waits, then go on
                       regardless (and say so) [BENCH_IDLE_TIMEOUT] 900
  --retry-above PCT    run a pinned wrk run again (at most 3 times) when anything
                       but the server took more than PCT% of the server's CPU
                       during it (0 = never) [BENCH_RETRY_ABOVE] 0
  --server-cpu N       the CPU of the pinned and callgrind servers [BENCH_SERVER_CPU]
                       the first CPU this script may use
  --load-cpu N         the CPU of wrk and curl in those parts [BENCH_LOAD_CPU]
                       the second CPU this script may use
  --callgrind-users N  users of the servers under callgrind [BENCH_CALLGRIND_USERS] 100000
  --callgrind-warmup N requests before instrumentation [BENCH_CALLGRIND_WARMUP] 2000 (500)
  --callgrind-requests N  requests counted [BENCH_CALLGRIND_REQUESTS] 10000 (2000)
  --blocked N          block N items (every (catalog / N)th id) through
                       POST /admin/blocklist before the callgrind requests
                       [BENCH_BLOCKED] 0
  --idempotency-keys   every callgrind request carries a new Idempotency-Key
                       (k-1, k-2, ...), to compare a keyed request's cost
                       with a plain one's [BENCH_IDEMPOTENCY_KEYS=1]
  --keep-dumps         keep callgrind's dumps beside the results, as
                       RESULT.feed.callgrind and RESULT.floor.callgrind, for
                       callgrind_annotate [BENCH_KEEP_DUMPS=1]
  --port P             feed-server port, or the next free one [BENCH_PORT] 18080
  --floor-port P       feed-floor port, or the next free one [BENCH_FLOOR_PORT] 18081
  --ready-timeout S    limit for the server to become ready [BENCH_READY_TIMEOUT] 300
  --feed-bin PATH      the feed-server binary [BENCH_FEED_BIN] target/release/feed-server
  --floor-bin PATH     the feed-floor binary [BENCH_FLOOR_BIN] target/release/feed-floor
  --report-bin PATH    the feed-report binary [BENCH_REPORT_BIN] target/release/feed-report
  --config PATH        feed-server's TOML file [BENCH_CONFIG] config/default.toml
  --feed-commit REV    what the feed binary was built from, for the record
                       [BENCH_FEED_COMMIT] this work tree's HEAD when this run
                       built it, else "unknown"
  --label NAME         a word for the file name and the report [BENCH_LABEL]
  --out DIR            where results go [BENCH_OUT] benchmark/results
  --no-build           use the release binaries already built
  --smoke              the smoke defaults above: a quick check of the whole pipeline

A binary given by --feed-bin, --floor-bin or --report-bin is used as it is;
the build (unless --no-build) still builds the workspace's own.
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
    pinned=${BENCH_PINNED:-1}
    callgrind=${BENCH_CALLGRIND:-1}
    callgrind_warmup=${BENCH_CALLGRIND_WARMUP:-500}
    callgrind_requests=${BENCH_CALLGRIND_REQUESTS:-2000}
else
    users=${BENCH_USERS:-5000000}
    duration=${BENCH_DURATION:-20}
    warmup=${BENCH_WARMUP:-5}
    rounds=${BENCH_ROUNDS:-3}
    oha_duration=${BENCH_OHA_DURATION:-20}
    oha_connections=${BENCH_OHA_CONNECTIONS:-50}
    oha_rates=${BENCH_OHA_RATES:-}
    pinned=${BENCH_PINNED:-0}
    callgrind=${BENCH_CALLGRIND:-0}
    callgrind_warmup=${BENCH_CALLGRIND_WARMUP:-2000}
    callgrind_requests=${BENCH_CALLGRIND_REQUESTS:-10000}
fi
shared=${BENCH_SHARED:-1}
keep_dumps=${BENCH_KEEP_DUMPS:-0}
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
pinned_connections=${BENCH_PINNED_CONNECTIONS:-50}
idle_below=${BENCH_IDLE_BELOW:-0}
idle_timeout=${BENCH_IDLE_TIMEOUT:-900}
retry_above=${BENCH_RETRY_ABOVE:-0}
server_cpu=${BENCH_SERVER_CPU:-}
load_cpu=${BENCH_LOAD_CPU:-}
callgrind_users=${BENCH_CALLGRIND_USERS:-100000}
idempotency_keys=${BENCH_IDEMPOTENCY_KEYS:-0}
blocked=${BENCH_BLOCKED:-0}
port=${BENCH_PORT:-18080}
floor_port=${BENCH_FLOOR_PORT:-18081}
ready_timeout=${BENCH_READY_TIMEOUT:-300}
feed_bin=${BENCH_FEED_BIN:-}
floor_bin=${BENCH_FLOOR_BIN:-}
report_bin=${BENCH_REPORT_BIN:-}
config=${BENCH_CONFIG:-config/default.toml}
feed_commit=${BENCH_FEED_COMMIT:-}
label=${BENCH_LABEL:-}
out_dir=${BENCH_OUT:-benchmark/results}

while (($#)); do
    case $1 in
        --smoke) ;;
        --no-build) build=0 ;;
        --pinned) pinned=1 ;;
        --no-pinned) pinned=0 ;;
        --callgrind) callgrind=1 ;;
        --no-callgrind) callgrind=0 ;;
        --no-shared) shared=0 ;;
        --keep-dumps) keep_dumps=1 ;;
        --isolated) pinned=1; callgrind=1; shared=0 ;;
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
        --pinned-connections) pinned_connections=$2; shift ;;
        --idle-below) idle_below=$2; shift ;;
        --idle-timeout) idle_timeout=$2; shift ;;
        --retry-above) retry_above=$2; shift ;;
        --server-cpu) server_cpu=$2; shift ;;
        --load-cpu) load_cpu=$2; shift ;;
        --callgrind-users) callgrind_users=$2; shift ;;
        --callgrind-warmup) callgrind_warmup=$2; shift ;;
        --callgrind-requests) callgrind_requests=$2; shift ;;
        --idempotency-keys) idempotency_keys=1 ;;
        --blocked) blocked=$2; shift ;;
        --port) port=$2; shift ;;
        --floor-port) floor_port=$2; shift ;;
        --ready-timeout) ready_timeout=$2; shift ;;
        --feed-bin) feed_bin=$2; shift ;;
        --floor-bin) floor_bin=$2; shift ;;
        --report-bin) report_bin=$2; shift ;;
        --config) config=$2; shift ;;
        --feed-commit) feed_commit=$2; shift ;;
        --label) label=$2; shift ;;
        --out) out_dir=$2; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

for n in users feed_len catalog max_size workers threads connections duration warmup \
    rounds oha_duration oha_connections mixed_unknown mixed_hot mixed_hot_users port blocked \
    floor_port ready_timeout pinned_connections idle_below idle_timeout retry_above callgrind_users \
    callgrind_warmup callgrind_requests; do
    [[ ${!n} =~ ^[0-9]+$ ]] || { echo "run.sh: $n must be a whole number, not '${!n}'" >&2; exit 2; }
done
for n in pinned callgrind shared keep_dumps idempotency_keys; do
    [[ ${!n} == [01] ]] || { echo "run.sh: BENCH_${n^^} must be 0 or 1, not '${!n}'" >&2; exit 2; }
done
((users > 0 && duration > 0 && rounds > 0 && threads > 0 && connections >= threads)) || {
    echo "run.sh: users, duration, rounds and threads must be positive, connections >= threads" >&2
    exit 2
}
((pinned_connections > 0 && callgrind_users > 0 && callgrind_requests > 0)) || {
    echo "run.sh: pinned connections, callgrind users and callgrind requests must be positive" >&2
    exit 2
}
((shared || pinned || callgrind)) || { echo "run.sh: --no-shared leaves nothing to run: add --pinned or --callgrind" >&2; exit 2; }
[[ -z $label || $label =~ ^[A-Za-z0-9._-]+$ ]] || { echo "run.sh: --label takes letters, digits, '.', '_' and '-' only" >&2; exit 2; }
[[ -r $config ]] || { echo "run.sh: cannot read the configuration $config" >&2; exit 2; }
config=$(realpath "$config")

mode=$([[ $smoke == 1 ]] && echo smoke || echo full)
cores=$(nproc)
effective_workers=$((workers == 0 ? cores : workers))
tty=0
[[ -t 2 ]] && tty=1

log() { printf '%s\n' "$*" >&2; }
now_ns() { date +%s%N; }

# ---------------------------------------------------------------- clean-up
tmp=$(mktemp -d "${TMPDIR:-/tmp}/feed-bench.XXXXXX")
# The processes this script started and has not reaped yet: the servers,
# and the load generator of the moment. Only these are stopped.
pids=()
load_pid=
# The log of the server started last, shown when the run fails.
server_log=

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
    if ((code != 0)) && [[ -n $server_log && -s $server_log ]]; then
        log "run.sh: failed; the last lines of $(basename "$server_log"):"
        tail -n 5 "$server_log" >&2 || true
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

# "UTIME STIME" of a process, in clock ticks: all its threads, those that
# have ended included. The command name (field 2) may hold spaces, so the
# fields are counted from the last ')'.
cpu_ticks() {
    local stat fields
    stat=$(<"/proc/$1/stat") || die "cannot read /proc/$1/stat"
    read -r -a fields <<<"${stat##*) }"
    echo "${fields[11]} ${fields[12]}"
}
clk_tck=$(getconf CLK_TCK)

# "BUSY IRQ TOTAL" clock ticks of CPU N since boot (/proc/stat): busy is
# user, nice, system, irq, softirq and steal; irq is irq and softirq (on
# loopback, much of the network stack; with tick-based accounting also
# counted in the stime of the process that was running); total adds idle
# and iowait.
core_ticks() {
    awk -v cpu="cpu$1" '$1 == cpu {
        busy = $2 + $3 + $4 + $7 + $8 + $9
        print busy, $7 + $8, busy + $5 + $6
        found = 1
    } END { if (!found) exit 1 }' /proc/stat || die "no line for CPU $1 in /proc/stat"
}

# The CPUs this script may run on (its affinity list), one a line.
allowed_cpus() {
    local list part i parts
    list=$(awk '/^Cpus_allowed_list:/ {print $2}' /proc/self/status)
    IFS=, read -r -a parts <<<"$list"
    for part in "${parts[@]}"; do
        if [[ $part == *-* ]]; then
            for ((i = ${part%-*}; i <= ${part#*-}; i++)); do echo "$i"; done
        else
            echo "$part"
        fi
    done
}

# Other processes on a shared machine take the pinned server's CPU as they
# please: taskset keeps wrk off it, not them. wait_idle waits, when
# --idle-below asks it to, until the whole machine was nearly idle over 2 s,
# and at most --idle-timeout seconds in all; each run also records how busy
# the server's CPU was with others (run_wrk), which is what to judge by.
idle_deadline=
idle_waited=0
idle_gave_up=0
machine_ticks() { awk '$1 == "cpu" { busy = $2 + $3 + $4 + $7 + $8 + $9; print busy, busy + $5 + $6 }' /proc/stat; }
wait_idle() {
    ((idle_below > 0)) || return 0
    [[ -n $idle_deadline ]] || idle_deadline=$(($(date +%s) + idle_timeout))
    local b0 t0 b1 t1 busy start
    start=$(date +%s)
    while :; do
        read -r b0 t0 < <(machine_ticks)
        sleep 2
        read -r b1 t1 < <(machine_ticks)
        busy=$(((b1 - b0) * 100 / ((t1 - t0) > 0 ? (t1 - t0) : 1)))
        ((busy < idle_below)) && break
        if (($(date +%s) >= idle_deadline)); then
            ((idle_gave_up)) || progress_done "the machine is still ${busy}% busy after $idle_timeout s of waiting: going on regardless"
            idle_gave_up=1
            break
        fi
        progress "waiting for the machine to be less than $idle_below% busy: ${busy}% over the last 2 s"
    done
    idle_waited=$((idle_waited + $(date +%s) - start))
}

# ---------------------------------------------------------------- tools
for tool in wrk curl jq timeout; do
    command -v "$tool" >/dev/null || die "$tool is missing (apt-get install -y wrk curl jq coreutils)"
done
if ((shared)); then
    if ! command -v oha >/dev/null; then
        [[ -x $HOME/.cargo/bin/oha ]] && export PATH="$HOME/.cargo/bin:$PATH"
    fi
    if ! command -v oha >/dev/null; then
        log "== oha is missing: cargo install oha --locked (several minutes, once)"
        timeout 3600 cargo install oha --locked >&2 || die "cargo install oha failed or took over an hour"
        export PATH="$HOME/.cargo/bin:$PATH"
    fi
fi
if ((pinned || callgrind)); then
    command -v taskset >/dev/null || die "taskset is missing (apt-get install -y util-linux)"
    mapfile -t usable < <(allowed_cpus)
    server_cpu=${server_cpu:-${usable[0]}}
    if [[ -z $load_cpu ]]; then
        ((${#usable[@]} >= 2)) || die "the pinned and callgrind parts need two CPUs and this script may use only ${usable[*]}: add --no-pinned --no-callgrind, or run on a larger machine"
        load_cpu=${usable[1]}
    fi
    for n in server_cpu load_cpu; do
        [[ ${!n} =~ ^[0-9]+$ ]] || die "--${n//_/-} must be a CPU number, not '${!n}'"
        [[ " ${usable[*]} " == *" ${!n} "* ]] || die "CPU ${!n} (--${n//_/-}) is not one this script may use (${usable[*]})"
    done
    ((server_cpu != load_cpu)) || die "--server-cpu and --load-cpu are both $server_cpu: they must differ"
fi
if ((callgrind)); then
    if ! command -v valgrind >/dev/null || ! command -v callgrind_control >/dev/null; then
        ((EUID == 0)) || die "valgrind is missing: apt-get install -y valgrind (as root), or leave out --callgrind"
        log "== valgrind is missing: apt-get install -y valgrind"
        timeout 600 apt-get update -qq >&2 || die "apt-get update failed"
        DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq valgrind >&2 ||
            die "apt-get install valgrind failed"
    fi
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
    timeout 3600 cargo build --release --locked -p feed-server -p feed-bench --bins >&2 ||
        die "the release build failed or took over an hour"
fi
built_feed=0
if [[ -z $feed_bin ]]; then
    feed_bin=$root/target/release/feed-server
    built_feed=$build
fi
floor_bin=${floor_bin:-$root/target/release/feed-floor}
report_bin=${report_bin:-$root/target/release/feed-report}
for b in "$feed_bin" "$floor_bin" "$report_bin"; do
    [[ -x $b ]] || die "$b is missing or not executable: run without --no-build, or check --feed-bin, --floor-bin and --report-bin"
done
feed_bin=$(realpath "$feed_bin")
floor_bin=$(realpath "$floor_bin")
if [[ -z $feed_commit ]]; then
    if ((built_feed)); then
        feed_commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)
        [[ -n $(git status --porcelain --untracked-files=no 2>/dev/null) ]] && feed_commit="$feed_commit (with uncommitted changes)"
    else
        feed_commit=unknown
    fi
fi

mkdir -p "$out_dir"
date_utc=$(date -u +%Y-%m-%dT%H:%M:%SZ)
stamp=$(date -u +%Y%m%dT%H%M%SZ)
result=$out_dir/$mode${label:+-$label}-$stamp.json

part_names=$( ((shared)) && printf 'shared '; ((pinned)) && printf 'pinned '; ((callgrind)) && printf 'callgrind '; true)
log "== $mode run (${part_names% }): $users users x $feed_len; feed-server $feed_bin"

# ---------------------------------------------------------------- servers
# start_feed NAME PORT WORKERS USERS [PREFIX...]: starts feed-server behind
# PREFIX (taskset, valgrind, or nothing) with its log in $tmp/NAME.log, waits
# for the ready line (showing the generator's progress), then for the first
# successful answer, which is what "ready" means here. Sets started_pid and
# started_ms (from spawning to that answer). PREFIX must exec the server, so
# that the PID is the server's.
start_feed() {
    local name=$1 port=$2 workers=$3 users=$4
    shift 4
    local start_ns deadline percent
    server_log=$tmp/$name.log
    : >"$server_log"
    start_ns=$(now_ns)
    # Each server runs in a fresh folder of its own, so that the relative
    # paths of the configuration (the progress folder) start empty: progress
    # left by an earlier run would exhaust the seeded users' feeds and turn
    # their answers into random fills.
    local cwd=$tmp/$name.cwd
    mkdir -p "$cwd"
    # The admin listener (metrics, profiler) takes any free loopback port, so
    # that a server already running on the default one does not stop the run.
    (cd "$cwd" && FEED__SERVER__HOST=127.0.0.1 FEED__SERVER__PORT=$port FEED__SERVER__WORKERS=$workers \
        FEED__DATA__USERS=$users FEED__DATA__FEED_LEN=$feed_len FEED__DATA__CATALOG_SIZE=$catalog \
        FEED__API__DEFAULT_SIZE=10 FEED__API__MAX_SIZE=$max_size FEED__LOG__FORMAT=json \
        FEED__ADMIN__PORT=0 \
        exec "$@" "$feed_bin" --config "$config") >"$server_log" 2>&1 &
    started_pid=$!
    pids+=("$started_pid")
    # The port is bound before the data is generated, but nothing is served
    # until then.
    deadline=$(($(date +%s) + ready_timeout))
    while ! grep -q '"feed-server ready"' "$server_log"; do
        kill -0 "$started_pid" 2>/dev/null || die "feed-server ($name) exited before it was ready"
        (($(date +%s) < deadline)) || die "feed-server ($name) not ready after $ready_timeout s"
        percent=$(grep '"generating feeds"' "$server_log" | tail -n 1 | jq -r '.percent // 0' 2>/dev/null || true)
        progress "$name: generating $users feeds: ${percent:-0}% ($((($(now_ns) - start_ns) / 1000000000)) s)"
        # Each pass forks grep, tail and jq; every 20 ms that took enough of the
        # two cores from the generator to stretch a 3.3 s start to 4.6-5.8 s.
        sleep 0.25
    done
    until curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$port/feed/1" 2>/dev/null; do
        kill -0 "$started_pid" 2>/dev/null || die "feed-server ($name) exited before it answered"
        (($(date +%s) < deadline)) || die "feed-server ($name) did not answer within $ready_timeout s"
        sleep 0.01
    done
    started_ms=$((($(now_ns) - start_ns) / 1000000))
}

# start_floor NAME PORT WORKERS BODY_BYTES [PREFIX...]: as start_feed, for
# feed-floor. Sets started_pid.
start_floor() {
    local name=$1 port=$2 workers=$3 body=$4
    shift 4
    local deadline
    server_log=$tmp/$name.log
    "$@" "$floor_bin" --host 127.0.0.1 --port "$port" --workers "$workers" \
        --body-bytes "$body" >"$server_log" 2>&1 &
    started_pid=$!
    pids+=("$started_pid")
    deadline=$(($(date +%s) + 60))
    until curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$port/feed/1" 2>/dev/null; do
        kill -0 "$started_pid" 2>/dev/null || die "feed-floor ($name) exited: $(tail -n 5 "$server_log")"
        (($(date +%s) < deadline)) || die "feed-floor ($name) did not answer within 60 s"
        sleep 0.02
    done
}

# The mean length of 20 default answers of the feed at URL (ids of 7 or 8
# digits), which the floor's body copies.
body_bytes_of() {
    local url=$1 total=0 user size
    for user in $(seq 2 21); do
        size=$(curl -fsS --max-time 5 -o "$tmp/body" -w '%{size_download}' "$url/feed/$user") ||
            die "GET /feed/$user failed"
        [[ $(jq length "$tmp/body") == 10 ]] || die "GET /feed/$user is not a 10-item array: $(head -c 200 "$tmp/body")"
        total=$((total + size))
    done
    echo $(((total + 10) / 20))
}

# ---------------------------------------------------------------- wrk
# run_wrk NAME URL SERVER_PID SECONDS SCRIPT ARGS...: runs ${wrk_cmd[@]}
# (wrk with its threads and connections, maybe behind taskset) and writes
# $tmp/NAME.json: wrk's numbers, its text output, and the server's CPU time
# over the run (SERVER_PID's utime and stime, in clock ticks). When
# $wrk_core and $wrk_load_core name the server's and wrk's CPUs, also their
# busy and total ticks over the run, which tell how much else ran on the
# server's CPU and whether wrk, not the server, set the pace.
wrk_core=
wrk_load_core=
run_wrk() {
    local name=$1 url=$2 server=$3 seconds=$4 script=$5
    shift 5
    local before after ub sb ua sa
    local core_before='0 0 0' core_after='0 0 0' load_before='0 0 0' load_after='0 0 0'
    local cb ci ct ca cia cta lb li lt la lia lta
    [[ -n $wrk_core ]] && core_before=$(core_ticks "$wrk_core")
    [[ -n $wrk_load_core ]] && load_before=$(core_ticks "$wrk_load_core")
    before=$(cpu_ticks "$server")
    # wrk runs under a shell whose `times` (its children's user and system
    # time) gives wrk's own CPU time.
    WRK_REPORT=$tmp/$name.raw.json WRK_TIMES=$tmp/$name.times timeout --kill-after=5 $((seconds + 30)) \
        bash -c '"$@"; status=$?; times >"$WRK_TIMES"; exit $status' run_wrk \
        "${wrk_cmd[@]}" -d"${seconds}s" --latency -s "$script" "$url" -- "$@" \
        >"$tmp/$name.txt" 2>&1 &
    load_pid=$!
    ln -sf "$tmp/$name.txt" "$tmp/last.txt"
    wait_for "$load_pid" "$seconds" "wrk $name"
    after=$(cpu_ticks "$server")
    [[ -n $wrk_core ]] && core_after=$(core_ticks "$wrk_core")
    [[ -n $wrk_load_core ]] && load_after=$(core_ticks "$wrk_load_core")
    [[ -s $tmp/$name.raw.json ]] || die "wrk $name wrote no report: $(cat "$tmp/$name.txt")"
    read -r ub sb <<<"$before"
    read -r ua sa <<<"$after"
    read -r cb ci ct <<<"$core_before"
    read -r ca cia cta <<<"$core_after"
    read -r lb li lt <<<"$load_before"
    read -r la lia lta <<<"$load_after"
    local wrk_cpu
    wrk_cpu=$(awk 'NR == 2 {
        t = 0
        for (i = 1; i <= 2; i++) { split($i, p, "m"); sub("s", "", p[2]); t += p[1] * 60 + p[2] }
        printf "%.3f", t
    }' "$tmp/$name.times" 2>/dev/null)
    [[ $wrk_cpu =~ ^[0-9.]+$ ]] || die "wrk $name: no CPU time in $tmp/$name.times"
    jq --rawfile text "$tmp/$name.txt" \
        --argjson utime $((ua - ub)) --argjson stime $((sa - sb)) --argjson tck "$clk_tck" \
        --arg core "$wrk_core" --argjson busy $((ca - cb)) --argjson irq $((cia - ci)) --argjson total $((cta - ct)) \
        --arg load "$wrk_load_core" --argjson load_busy $((la - lb)) --argjson load_irq $((lia - li)) \
        --argjson load_total $((lta - lt)) --argjson wrk_cpu "$wrk_cpu" \
        '. + {text: $text, server_cpu: ({utime_ticks: $utime, stime_ticks: $stime, clk_tck: $tck}
              + if $core == "" then {} else {core: {cpu: ($core | tonumber), busy_ticks: $busy, irq_ticks: $irq, total_ticks: $total}} end)}
           + {wrk_cpu_s: $wrk_cpu}
           + if $load == "" then {} else {load_cpu: {cpu: ($load | tonumber), busy_ticks: $load_busy, irq_ticks: $load_irq, total_ticks: $load_total}} end' \
        "$tmp/$name.raw.json" >"$tmp/$name.json"
    local rps errors cpu_us
    rps=$(jq -r '(.requests * 1e6 / .duration_us) | floor' "$tmp/$name.json")
    errors=$(jq -r '.errors | add' "$tmp/$name.json")
    cpu_us=$(jq -r 'if .requests > 0 then (.server_cpu | (.utime_ticks + .stime_ticks) / .clk_tck) * 1e6 / .requests * 100 | round / 100 else "n/a" end' "$tmp/$name.json")
    local shares=
    if [[ -n $wrk_core && -n $wrk_load_core ]]; then
        shares=$(jq -r '"; CPU \(.server_cpu.core.cpu): server \(((.server_cpu.utime_ticks + .server_cpu.stime_ticks) * 100 / ([.server_cpu.core.total_ticks, 1] | max)) | round)%, anything else \([((.server_cpu.core.busy_ticks - .server_cpu.utime_ticks - .server_cpu.stime_ticks) * 100 / ([.server_cpu.core.total_ticks, 1] | max)), 0] | max | round)%; CPU \(.load_cpu.cpu): wrk \((.wrk_cpu_s * .server_cpu.clk_tck * 100 / ([.load_cpu.total_ticks, 1] | max)) | round)%, anything else \([((.load_cpu.busy_ticks - .wrk_cpu_s * .server_cpu.clk_tck) * 100 / ([.load_cpu.total_ticks, 1] | max)), 0] | max | round)%"' "$tmp/$name.json")
    fi
    progress_done "wrk $name: $rps req/s, p50 $(jq -r .latency_us.p50 "$tmp/$name.json") µs, p99 $(jq -r .latency_us.p99 "$tmp/$name.json") µs, errors $errors, server CPU $cpu_us µs/request$shares"
}

# rounds_json PREFIX: the rounds PREFIX-R-feed and PREFIX-R-floor as one array.
rounds_json() {
    local round target
    for round in $(seq 1 "$rounds"); do
        for target in feed floor; do
            jq --argjson round "$round" --arg target "$target" \
                '{round: $round, target: $target, wrk: .}' "$tmp/$1-$round-$target.json"
        done
    done | jq -s .
}

random_ids=benchmark/wrk/random_ids.lua

# ================================================================ shared cores
if ((shared)); then
    log "== shared cores: $effective_workers workers, wrk -t$threads -c$connections -d${duration}s, $rounds round(s)"
    log "== starting feed-server on 127.0.0.1:$port"
    feed_url=http://127.0.0.1:$port
    start_feed feed "$port" "$workers" "$users"
    feed_pid=$started_pid
    ready_ms=$started_ms
    generation_ms=$(grep '"feed-server ready"' "$tmp/feed.log" | head -n 1 | jq -r '.load_ms // .generation_ms // 0')
    rss_ready=$(rss_kib "$feed_pid")
    progress_done "ready in $ready_ms ms (generation $generation_ms ms), RSS $((rss_ready / 1024)) MiB"

    body_bytes=$(body_bytes_of "$feed_url")
    log "== starting feed-floor on 127.0.0.1:$floor_port ($body_bytes-byte body)"
    floor_url=http://127.0.0.1:$floor_port
    start_floor floor "$floor_port" "$workers" "$body_bytes"
    floor_pid=$started_pid

    wrk_cmd=(wrk -t"$threads" -c"$connections")
    if ((warmup > 0)); then
        log "== warm-up, $warmup s each (not recorded)"
        run_wrk warmup-feed "$feed_url" "$feed_pid" "$warmup" "$random_ids" "$users"
        run_wrk warmup-floor "$floor_url" "$floor_pid" "$warmup" "$random_ids" "$users"
    fi

    log "== $rounds round(s) of wrk: feed, then floor"
    for round in $(seq 1 "$rounds"); do
        run_wrk "round-$round-feed" "$feed_url" "$feed_pid" "$duration" "$random_ids" "$users"
        run_wrk "round-$round-floor" "$floor_url" "$floor_pid" "$duration" "$random_ids" "$users"
    done
    rss_after_wrk=$(rss_kib "$feed_pid")

    log "== mixed workload against the feed"
    run_wrk mixed "$feed_url" "$feed_pid" "$duration" benchmark/wrk/mixed.lua \
        "$users" "$max_size" "$mixed_unknown" "$mixed_hot" "$mixed_hot_users"

    rounds_json round >"$tmp/shared-rounds.json"

    # ------------------------------------------------------------ oha
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

    feed_rounds=()
    for round in $(seq 1 "$rounds"); do feed_rounds+=("$tmp/round-$round-feed.json"); done
    median_rps=$(jq -s 'map(.requests * 1e6 / .duration_us) | sort
        | if length % 2 == 1 then .[length / 2 | floor] else (.[length / 2 - 1] + .[length / 2]) / 2 end' \
        "${feed_rounds[@]}")
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
    if ((${#oha_runs[@]})); then jq -s . "${oha_runs[@]}"; else echo '[]'; fi >"$tmp/oha.json"

    rss_end=$(rss_kib "$feed_pid")
    hwm_end=$(hwm_kib "$feed_pid")
    floor_rss_end=$(rss_kib "$floor_pid")
    jq -n \
        --argjson ready_ms "$ready_ms" --argjson generation_ms "$generation_ms" \
        --argjson rss_ready "$rss_ready" --argjson rss_after_wrk "$rss_after_wrk" \
        --argjson rss_end "$rss_end" --argjson hwm_end "$hwm_end" \
        --argjson body_bytes "$body_bytes" --argjson floor_rss_end "$floor_rss_end" \
        '{ready_ms: $ready_ms, generation_ms: $generation_ms,
          rss_ready_kib: $rss_ready, rss_after_wrk_kib: $rss_after_wrk,
          rss_end_kib: $rss_end, hwm_end_kib: $hwm_end,
          body_bytes: $body_bytes, floor_rss_end_kib: $floor_rss_end}' >"$tmp/server.json"
    # The next parts start their own servers: free the memory and the cores.
    stop "$feed_pid" "$floor_pid"
fi

# ================================================================ pinned
# pinned_run NAME URL PID: one pinned wrk run, after wait_idle; with
# --retry-above, run again (at most 3 more times) while anything but the
# server (other processes, and the interrupts that came meanwhile) took more
# than that share of the server's CPU.
pinned_repeats=0
pinned_run() {
    local attempt others
    for attempt in 0 1 2 3; do
        wait_idle
        run_wrk "$1" "$2" "$3" "$duration" "$random_ids" "$users"
        ((retry_above > 0)) || return 0
        others=$(jq -r '.server_cpu | ((.core.busy_ticks - .utime_ticks - .stime_ticks)
            * 100 / ([.core.total_ticks, 1] | max)) | if . < 0 then 0 else . end | round' "$tmp/$1.json")
        ((others <= retry_above)) && return 0
        if ((attempt < 3)); then
            progress_done "something else took $others% of CPU $server_cpu during $1: running it again"
            pinned_repeats=$((pinned_repeats + 1))
        else
            progress_done "something else took $others% of CPU $server_cpu during $1, 4 times: keeping the last"
        fi
    done
}

if ((pinned)); then
    log "== pinned: each server with 1 worker on CPU $server_cpu, wrk -t1 -c$pinned_connections -d${duration}s on CPU $load_cpu, $rounds round(s)"
    pin_server=(taskset -c "$server_cpu")
    log "== starting feed-server on 127.0.0.1:$port, CPU $server_cpu"
    start_feed pinned-feed "$port" 1 "$users" "${pin_server[@]}"
    feed_pid=$started_pid
    pinned_ready_ms=$started_ms
    progress_done "ready in $pinned_ready_ms ms"
    feed_url=http://127.0.0.1:$port
    pinned_body=$(body_bytes_of "$feed_url")
    log "== starting feed-floor on 127.0.0.1:$floor_port, CPU $server_cpu ($pinned_body-byte body)"
    start_floor pinned-floor "$floor_port" 1 "$pinned_body" "${pin_server[@]}"
    floor_pid=$started_pid
    floor_url=http://127.0.0.1:$floor_port

    wrk_cmd=(taskset -c "$load_cpu" wrk -t1 -c"$pinned_connections")
    wrk_core=$server_cpu
    wrk_load_core=$load_cpu
    if ((warmup > 0)); then
        log "== warm-up, $warmup s each (not recorded)"
        run_wrk pinned-warmup-feed "$feed_url" "$feed_pid" "$warmup" "$random_ids" "$users"
        run_wrk pinned-warmup-floor "$floor_url" "$floor_pid" "$warmup" "$random_ids" "$users"
    fi
    log "== $rounds pinned round(s) of wrk: feed, then floor"
    for round in $(seq 1 "$rounds"); do
        pinned_run "pinned-$round-feed" "$feed_url" "$feed_pid"
        pinned_run "pinned-$round-floor" "$floor_url" "$floor_pid"
    done
    wrk_core=
    wrk_load_core=
    jq -n --argjson server_cpu "$server_cpu" --argjson load_cpu "$load_cpu" \
        --argjson connections "$pinned_connections" --argjson duration "$duration" \
        --argjson warmup "$warmup" --argjson rounds "$rounds" --argjson users "$users" \
        --argjson body_bytes "$pinned_body" --argjson ready_ms "$pinned_ready_ms" \
        --argjson idle_below "$idle_below" --argjson idle_waited "$idle_waited" \
        --argjson idle_gave_up "$( ((idle_gave_up)) && echo true || echo false)" \
        --argjson retry_above "$retry_above" --argjson repeats "$pinned_repeats" \
        --slurpfile runs <(rounds_json pinned) \
        '{server_cpu: $server_cpu, load_cpu: $load_cpu, workers: 1,
          wrk_threads: 1, wrk_connections: $connections, duration_s: $duration,
          warmup_s: $warmup, rounds: $rounds, users: $users, body_bytes: $body_bytes,
          feed_ready_ms: $ready_ms, runs: $runs[0]}
         + (if $idle_below > 0 then {idle_below_pct: $idle_below, idle_waited_s: $idle_waited,
                                     idle_gave_up: $idle_gave_up} else {} end)
         + (if $retry_above > 0 then {retry_above_pct: $retry_above, repeated_runs: $repeats} else {} end)' \
        >"$tmp/pinned.json"
    stop "$feed_pid" "$floor_pid"
fi

# ================================================================ callgrind
# counted NAME PORT N SEED: exactly N GET /feed/{id} (default size) over one
# keep-alive connection, from one curl on the load CPU, ids uniform over the
# callgrind users from awk's generator seeded with SEED (so the same ids every
# time); checks that all N were answered 200 on one connection. With
# --idempotency-keys each request carries its own key (a curl config block
# per request, `next` between them: headers would otherwise add up).
counted() {
    local name=$1 port=$2 n=$3 seed=$4
    ((n > 0)) || return 0
    awk -v n="$n" -v users="$callgrind_users" -v seed="$seed" -v port="$port" \
        -v keys="$idempotency_keys" -v max_time=$((30 + n / 50)) 'BEGIN {
        srand(seed)
        for (i = 0; i < n; i++) {
            printf "url = \"http://127.0.0.1:%d/feed/%d\"\noutput = \"/dev/null\"\n", port, int(rand() * users)
            if (keys)
                printf "header = \"Idempotency-Key: k-%d-%d\"\nwrite-out = \"%%{http_code} %%{num_connects}\\n\"\nmax-time = %d\nsilent\nshow-error\n%s", seed, i, max_time, (i < n - 1 ? "next\n" : "")
        }
    }' >"$tmp/$name.curl"
    # Under callgrind a request takes about a millisecond; allow 20.
    timeout --kill-after=5 $((30 + n / 50)) taskset -c "$load_cpu" \
        curl -sS --max-time $((30 + n / 50)) -K "$tmp/$name.curl" -w '%{http_code} %{num_connects}\n' \
        >"$tmp/$name.codes" 2>"$tmp/$name.txt" || die "curl $name failed: $(tail -n 3 "$tmp/$name.txt")"
    local ok connects
    ok=$(awk '$1 == 200' "$tmp/$name.codes" | wc -l)
    connects=$(awk '{c += $2} END {print c + 0}' "$tmp/$name.codes")
    ((ok == n)) || die "curl $name: $ok of $n answers were 200: $(sort "$tmp/$name.codes" | uniq -c | head -n 5)"
    ((connects == 1)) || die "curl $name used $connects connections, not 1 (no keep-alive?)"
}

# cg_control NAME PID ARGS...: callgrind_control ARGS on PID, bounded, checked.
cg_control() {
    local name=$1 pid=$2
    shift 2
    timeout --kill-after=5 60 callgrind_control "$@" "$pid" >>"$tmp/$name.control" 2>&1 ||
        die "callgrind_control $* $pid failed: $(tail -n 3 "$tmp/$name.control")"
    grep -q 'OK' "$tmp/$name.control" || die "callgrind_control $* $pid: $(tail -n 3 "$tmp/$name.control")"
    : >"$tmp/$name.control"
}

if ((callgrind)); then
    valgrind_version=$(valgrind --version)
    log "== callgrind ($valgrind_version): each server with 1 worker on CPU $server_cpu, $callgrind_users users, $callgrind_warmup requests of warm-up, then $callgrind_requests counted"
    cg_runs=()
    cg_body=
    for target in feed floor; do
        name=callgrind-$target
        cg_port=$([[ $target == feed ]] && echo "$port" || echo "$floor_port")
        cg=(taskset -c "$server_cpu" valgrind --tool=callgrind --instr-atstart=no
            --callgrind-out-file="$tmp/$name.out" --log-file="$tmp/$name.valgrind.log")
        log "== starting $target under callgrind on 127.0.0.1:$cg_port"
        if [[ $target == feed ]]; then
            start_feed "$name" "$cg_port" 1 "$callgrind_users" "${cg[@]}"
            cg_pid=$started_pid
            progress_done "ready in $started_ms ms"
            if ((blocked > 0)); then
                cg_admin=$(jq -r 'select(.msg == "feed-server ready") | .admin' "$server_log" | head -n 1)
                awk -v n="$blocked" -v catalog="$catalog" 'BEGIN {
                    step = int(catalog / n); if (step < 1) step = 1
                    printf "{\"add\": ["
                    for (i = 1; i <= n; i++) printf "%s%d", (i > 1 ? "," : ""), i * step
                    printf "]}"
                }' >"$tmp/blocked.json"
                answer=$(timeout 900 curl -sS --max-time 900 -X POST -H 'content-type: application/json' \
                    --data-binary @"$tmp/blocked.json" "http://$cg_admin/admin/blocklist") ||
                    die "POST /admin/blocklist failed"
                [[ $(jq -r .blocked <<<"$answer") == "$blocked" ]] || die "POST /admin/blocklist: $answer"
                progress_done "$blocked items blocked"
            fi
            cg_body=$(body_bytes_of "http://127.0.0.1:$cg_port")
        else
            start_floor "$name" "$cg_port" 1 "$cg_body" "${cg[@]}"
            cg_pid=$started_pid
        fi
        counted "$name-warmup" "$cg_port" "$callgrind_warmup" 2
        cg_control "$name" "$cg_pid" -i on
        counted "$name-counted" "$cg_port" "$callgrind_requests" 1
        cg_control "$name" "$cg_pid" -i off
        cg_control "$name" "$cg_pid" -d
        dump=$tmp/$name.out.1
        [[ -s $dump ]] || die "callgrind wrote no dump $dump: $(ls "$tmp")"
        instructions=$(awk '/^totals:/ {print $2; exit}' "$dump")
        [[ $instructions =~ ^[0-9]+$ ]] || die "no 'totals:' line in $dump"
        ((keep_dumps)) && install -m 644 "$dump" "${result%.json}.$target.callgrind"
        jq -n --arg target "$target" --argjson requests "$callgrind_requests" \
            --argjson instructions "$instructions" \
            '{target: $target, requests: $requests, instructions: $instructions}' >"$tmp/$name.json"
        cg_runs+=("$tmp/$name.json")
        progress_done "$target: $instructions instructions for $callgrind_requests requests, $((instructions / callgrind_requests)) a request"
        stop "$cg_pid"
    done
    jq -n --arg valgrind "$valgrind_version" --argjson users "$callgrind_users" \
        --argjson warmup "$callgrind_warmup" --argjson requests "$callgrind_requests" \
        --argjson server_cpu "$server_cpu" --argjson load_cpu "$load_cpu" \
        --argjson body_bytes "$cg_body" --slurpfile runs <(jq -s . "${cg_runs[@]}") \
        '{valgrind: $valgrind, users: $users, warmup_requests: $warmup, requests: $requests,
          workers: 1, server_cpu: $server_cpu, load_cpu: $load_cpu, body_bytes: $body_bytes,
          client: "curl -K (one keep-alive connection, default size, seeded ids)",
          runs: $runs[0]}' >"$tmp/callgrind.json"
fi

# ---------------------------------------------------------------- results
# A part that did not run is absent from the file.
section() { if [[ -s $tmp/$1 ]]; then cat "$tmp/$1"; else echo "$2"; fi; }
dirty=false
[[ -n $(git status --porcelain --untracked-files=no 2>/dev/null) ]] && dirty=true
jq -n \
    --arg mode "$mode" --arg run_label "$label" --arg command "$command_line" \
    --argjson nproc "$cores" \
    --argjson mem "$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)" \
    --arg kernel "$(uname -r)" \
    --arg cpu "$(grep -m 1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//' || echo unknown)" \
    --arg commit "$(git rev-parse HEAD 2>/dev/null || echo unknown)" --argjson dirty "$dirty" \
    --arg date "$date_utc" \
    --arg feed_bin "$feed_bin" --arg feed_sha "$(sha256sum "$feed_bin" | cut -d' ' -f1)" \
    --arg feed_commit "$feed_commit" --arg config "$config" \
    --arg floor_bin "$floor_bin" --arg floor_sha "$(sha256sum "$floor_bin" | cut -d' ' -f1)" \
    --argjson users "$users" --argjson feed_len "$feed_len" --argjson catalog "$catalog" \
    --argjson max_size "$max_size" --argjson workers "$effective_workers" \
    --argjson threads "$threads" --argjson connections "$connections" \
    --argjson duration "$duration" --argjson warmup "$warmup" --argjson rounds "$rounds" \
    --argjson oha_duration "$oha_duration" --argjson oha_connections "$oha_connections" \
    --arg regex "${regex:-}" --argjson mixed_unknown "$mixed_unknown" \
    --argjson mixed_hot "$mixed_hot" --argjson mixed_hot_users "$mixed_hot_users" \
    --argjson server "$(section server.json null)" \
    --argjson rounds_json "$(section shared-rounds.json '[]')" \
    --argjson mixed "$(section mixed.json null)" \
    --argjson oha "$(section oha.json '[]')" \
    --argjson pinned "$(section pinned.json null)" \
    --argjson callgrind "$(section callgrind.json null)" \
    '{
        mode: $mode, command: $command,
        machine: {nproc: $nproc, mem_total_kib: $mem, kernel: $kernel, cpu: $cpu,
                  git_commit: $commit, git_dirty: $dirty, date: $date},
        binaries: {feed: $feed_bin, feed_sha256: $feed_sha, feed_commit: $feed_commit,
                   feed_config: $config, floor: $floor_bin, floor_sha256: $floor_sha},
        config: {users: $users, feed_len: $feed_len, catalog_size: $catalog,
                 max_size: $max_size, workers: $workers, wrk_threads: $threads,
                 wrk_connections: $connections, duration_s: $duration, warmup_s: $warmup,
                 rounds: $rounds, oha_duration_s: $oha_duration,
                 oha_connections: $oha_connections, oha_url_regex: $regex,
                 mixed_unknown_pct: $mixed_unknown, mixed_hot_pct: $mixed_hot,
                 mixed_hot_users: $mixed_hot_users},
        server: $server, rounds: $rounds_json, mixed: $mixed, oha: $oha,
        pinned: $pinned, callgrind: $callgrind
    } + (if $run_label == "" then {} else {label: $run_label} end)' >"$tmp/result.json"
mv "$tmp/result.json" "$result"

"$report_bin" "$result" --print
log "== wrote $result and its .md and .svg"
