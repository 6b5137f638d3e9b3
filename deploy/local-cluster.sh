#!/usr/bin/env bash
# A whole Fast Feed deployment on loopback: a Redis Cluster, the data, two
# frontends and HAProxy in front of them (docs/SCALING.md).
#
#   deploy/local-cluster.sh up     # start everything (USERS=100000 by default)
#   deploy/local-cluster.sh publish SNAPSHOT  # serve new data (while up)
#   deploy/local-cluster.sh down   # stop everything it started, by pid
#   deploy/local-cluster.sh status # what is running
#
# The cluster keeps only the users' progress; each frontend maps the
# snapshot of the version it serves from its own folder
# (STATE_DIR/frontend-PORT/snapshots, its redis.snapshots). Publishing new
# data is two steps, in this order: copy the snapshot into every frontend's
# folder (here `cp`; between hosts, rsync or an object store), then
# `feed-server redis-load` it, which moves the version pointer. A frontend
# that lacks the snapshot keeps serving the version it has and says so in
# its log. `publish` does both steps; `up` publishes the synthetic data.
#
# It installs nothing: redis-server, redis-cli and haproxy must be on the
# PATH (Debian: apt-get install redis-server redis-tools haproxy). It builds
# target/release/feed-server with cargo if it is missing.
#
#   Redis     127.0.0.1:17000-17005   3 masters, 3 replicas
#   frontends 127.0.0.1:18801-18802   admin 127.0.0.1:18901-18902
#   HAProxy   127.0.0.1:18800         round-robin, health checks on /readyz;
#                                     TCP mode, each connection opened with a
#                                     PROXY protocol v2 header naming the
#                                     client (trusted by the frontends:
#                                     limits.proxy_protocol); HAPROXY_MODE=http
#                                     reads HTTP and writes X-Forwarded-For
#
# Every Redis node asks for a password: REDIS_PASSWORD from the
# environment, or one generated at the first `up` and kept in
# STATE_DIR/redis-password (0600). The nodes read it from a configuration
# file, redis-cli from REDISCLI_AUTH, feed-server from
# FEED__REDIS__PASSWORD_FILE: it is never on a command line.
#
# Environment: USERS (100000), FEED_LEN (200), STATE_DIR
# (target/local-cluster: configs, logs, pids, Redis data), FEED_BIN,
# REDIS_PASSWORD, HAPROXY_MODE (tcp or http), REDIS_ARGS (more
# redis-server arguments for every node, after the defaults above, e.g.
# "--appendonly no" to measure what the append-only file costs).
set -euo pipefail

cd "$(dirname "$0")/.."
state=${STATE_DIR:-target/local-cluster}
users=${USERS:-100000}
feed_len=${FEED_LEN:-200}
feed_bin=${FEED_BIN:-target/release/feed-server}
redis_ports=(17000 17001 17002 17003 17004 17005)
frontend_ports=(18801 18802)
admin_ports=(18901 18902)
proxy_port=18800
haproxy_mode=${HAPROXY_MODE:-tcp}
# Words, so that several arguments can be given.
read -ra redis_args <<<"${REDIS_ARGS:-}"
nodes=$(printf 'redis://127.0.0.1:%s,' "${redis_ports[@]:0:3}")
nodes=${nodes%,}

password_file=$state/redis-password

say() { printf 'local-cluster: %s\n' "$*" >&2; }

# The cluster's password: REDIS_PASSWORD, or the one kept in the state
# folder, or a new one kept there; exported for redis-cli.
password() {
    mkdir -p "$state"
    if [[ -n ${REDIS_PASSWORD:-} ]]; then
        (umask 077 && printf '%s\n' "$REDIS_PASSWORD" >"$password_file")
    elif [[ ! -s $password_file ]]; then
        (umask 077 && od -An -tx1 -N24 /dev/urandom | tr -d ' \n' >"$password_file" && echo >>"$password_file")
    fi
    REDISCLI_AUTH=$(head -n 1 "$password_file")
    export REDISCLI_AUTH
}
die() { say "$*"; exit 1; }

wait_for() { # SECONDS DESCRIPTION COMMAND...
    local limit=$1 what=$2
    shift 2
    local deadline=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || die "timed out after ${limit}s waiting for $what"
        sleep 0.2
    done
}

start() { # NAME COMMAND... (in the background, pid in $state/pids/NAME.pid)
    local name=$1
    shift
    "$@" >"$state/logs/$name.log" 2>&1 &
    echo $! >"$state/pids/$name.pid"
}

cluster_ready() {
    local port
    for port in "${redis_ports[@]}"; do
        redis-cli -p "$port" cluster info | grep -q cluster_state:ok || return 1
        redis-cli -p "$port" info replication | grep -Eq 'role:master|master_link_status:up' || return 1
    done
}

up() {
    local missing=() tool
    for tool in redis-server redis-cli haproxy; do
        command -v "$tool" >/dev/null || missing+=("$tool")
    done
    ((${#missing[@]} == 0)) || die "missing: ${missing[*]} (Debian: apt-get install redis-server redis-tools haproxy)"
    [[ $haproxy_mode == tcp || $haproxy_mode == http ]] ||
        die "HAPROXY_MODE must be tcp or http, not $haproxy_mode"
    if [[ -d $state/pids ]] && compgen -G "$state/pids/*.pid" >/dev/null; then
        die "already up (pids in $state/pids): run '$0 down' first"
    fi
    if [[ ! -x $feed_bin ]]; then
        say "building $feed_bin"
        cargo build --release -p feed-server
    fi
    mkdir -p "$state/pids" "$state/logs" "$state/redis"
    password
    # The nodes' password, in a file only this user can read.
    (umask 077 && printf 'requirepass "%s"\nmasterauth "%s"\n' "$REDISCLI_AUTH" "$REDISCLI_AUTH" >"$state/redis/auth.conf")
    # A failure half-way stops what was started so far.
    trap 'code=$?; if ((code != 0)); then say "up failed: stopping what it started"; down; fi' EXIT
    local port
    for port in "${redis_ports[@]}" "${frontend_ports[@]}" "${admin_ports[@]}" "$proxy_port"; do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            die "port $port is taken"
        fi
    done

    say "starting 6 Redis nodes on ${redis_ports[0]}-${redis_ports[5]}"
    for port in "${redis_ports[@]}"; do
        # Each node in a folder of its own: its cluster state and its
        # append-only file (progress survives a node restart).
        rm -rf "$state/redis/$port"
        mkdir -p "$state/redis/$port"
        start "redis-$port" redis-server "$state/redis/auth.conf" --port "$port" --bind 127.0.0.1 \
            --cluster-enabled yes --cluster-config-file nodes.conf \
            --cluster-node-timeout 2000 --appendonly yes --appendfsync everysec --save "" \
            --repl-diskless-sync-delay 0 --dir "$state/redis/$port" "${redis_args[@]}"
    done
    for port in "${redis_ports[@]}"; do
        wait_for 10 "redis on $port" redis-cli -p "$port" ping
    done
    redis-cli --cluster create $(printf '127.0.0.1:%s ' "${redis_ports[@]}") \
        --cluster-replicas 1 --cluster-yes >"$state/logs/cluster-create.log"
    wait_for 30 "the cluster (every slot served, every replica in sync)" cluster_ready

    say "loading $users users x $feed_len items"
    rm -rf "$state"/frontend-*
    FEED__DATA__USERS=$users FEED__DATA__FEED_LEN=$feed_len \
        "$feed_bin" import --synthetic --output "$state/snapshot.ffs" >/dev/null
    publish "$state/snapshot.ffs"

    local i
    for i in 0 1; do
        say "starting frontend on ${frontend_ports[i]} (admin ${admin_ports[i]})"
        start "frontend-${frontend_ports[i]}" env \
            FEED__STORAGE__KIND=redis FEED__REDIS__NODES="$nodes" \
            FEED__REDIS__PASSWORD_FILE="$password_file" \
            FEED__REDIS__SNAPSHOTS="$(snapshots "${frontend_ports[i]}")" \
            FEED__SERVER__HOST=127.0.0.1 FEED__SERVER__PORT="${frontend_ports[i]}" \
            FEED__ADMIN__PORT="${admin_ports[i]}" FEED__PROGRESS__PATH= \
            FEED__LIMITS__TRUSTED_PROXIES=127.0.0.1/32 \
            FEED__LIMITS__PROXY_PROTOCOL="$([[ $haproxy_mode == tcp ]] && echo true || echo false)" \
            FEED__SERVER__SHUTDOWN_DELAY_MS=1000 \
            "$feed_bin"
    done
    for port in "${frontend_ports[@]}"; do
        wait_for 30 "frontend $port ready" curl -fs "http://127.0.0.1:$port/readyz"
    done

    local mode send_proxy
    case $haproxy_mode in
        # Bytes passed through; the client's address in a PROXY protocol
        # header at the start of each connection: the frontends trust this
        # proxy (FEED__LIMITS__TRUSTED_PROXIES, FEED__LIMITS__PROXY_PROTOCOL)
        # and rate-limit and log by it. HAProxy's health checks carry a
        # header too (naming no client).
        tcp) mode=$'mode tcp\n    timeout server 30s' send_proxy=' send-proxy-v2' ;;
        # HTTP read and balanced per request; the client's address in
        # X-Forwarded-For.
        http) mode=$'mode http\n    timeout server 5s\n    option http-keep-alive\n    option forwardfor' send_proxy='' ;;
        *) die "HAPROXY_MODE must be tcp or http, not $haproxy_mode" ;;
    esac
    cat >"$state/haproxy.cfg" <<CFG
global
    maxconn 4000
defaults
    $mode
    timeout connect 1s
    timeout client 30s
frontend feeds
    bind 127.0.0.1:$proxy_port
    default_backend frontends
backend frontends
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    server f1 127.0.0.1:${frontend_ports[0]}$send_proxy check inter 1s fall 2 rise 1
    server f2 127.0.0.1:${frontend_ports[1]}$send_proxy check inter 1s fall 2 rise 1
CFG
    haproxy -c -f "$state/haproxy.cfg" >/dev/null
    say "starting HAProxy on $proxy_port"
    start haproxy haproxy -f "$state/haproxy.cfg"
    wait_for 10 "HAProxy" curl -fs "http://127.0.0.1:$proxy_port/feed/1?size=1"
    trap - EXIT
    say "up: curl 'http://127.0.0.1:$proxy_port/feed/1?size=5'"
}

# The folder of the snapshots the frontend on port $1 maps.
snapshots() { echo "$state/frontend-$1/snapshots"; }

# Distributes the snapshot at $1 to every frontend's folder (copied to a
# temporary name, then renamed: a file a frontend maps is never changed in
# place), then publishes it in the cluster as the version to serve. Each
# folder keeps the three newest snapshots: the current version's, the
# previous one's (for a rollback), and the one before, which a frontend
# still serving it needs until it switches.
publish() {
    local snapshot=$1 port folder name
    [[ -f $snapshot ]] || die "publish: no snapshot at $snapshot"
    name=$(date -u +%Y%m%dT%H%M%S%N)-$(basename "$snapshot")
    for port in "${frontend_ports[@]}"; do
        folder=$(snapshots "$port")
        mkdir -p "$folder"
        cp "$snapshot" "$folder/.$name.part"
        mv "$folder/.$name.part" "$folder/$name"
        ls -1t "$folder" | tail -n +4 | while read -r old; do rm -f "$folder/$old"; done
    done
    password
    # redis-load maps the snapshots too (the first frontend's folder): it
    # writes the marks of what the version served gave ahead of the switch.
    FEED__REDIS__PASSWORD_FILE=$password_file \
        FEED__REDIS__SNAPSHOTS="$(snapshots "${frontend_ports[0]}")" \
        "$feed_bin" redis-load --snapshot "$snapshot" --nodes "$nodes" 2>>"$state/logs/redis-load.log" \
        || die "publish: redis-load failed: see $state/logs/redis-load.log"
}

down() {
    [[ -d $state/pids ]] || { say "nothing to stop"; return 0; }
    local pidfile pid
    for pidfile in "$state"/pids/*.pid; do
        [[ -e $pidfile ]] || continue
        pid=$(cat "$pidfile")
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
        fi
    done
    for pidfile in "$state"/pids/*.pid; do
        [[ -e $pidfile ]] || continue
        pid=$(cat "$pidfile")
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        # Only a process that is still there: a pid that is gone may be reused.
        if kill -0 "$pid" 2>/dev/null; then
            kill -9 "$pid" 2>/dev/null || true
        fi
        rm -f "$pidfile"
    done
    rm -rf "$state/redis"
    say "down"
}

status() {
    local pidfile pid
    for pidfile in "$state"/pids/*.pid; do
        [[ -e $pidfile ]] || { say "nothing running"; return 0; }
        pid=$(cat "$pidfile")
        if kill -0 "$pid" 2>/dev/null; then state_word=running; else state_word=gone; fi
        printf '%-22s pid %-8s %s\n' "$(basename "$pidfile" .pid)" "$pid" "$state_word"
    done
}

case ${1:-} in
    up) up ;;
    publish) [[ -n ${2:-} ]] || die "usage: $0 publish SNAPSHOT"; publish "$2" ;;
    down) down ;;
    status) status ;;
    *) sed -n '2,32p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
