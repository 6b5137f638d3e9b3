#!/usr/bin/env bash
# The deployment's own steps, checked end to end (CI runs this):
#
#   deploy/check-local-cluster.sh    # FEED_BIN=target/debug/feed-server by default
#
# brings deploy/local-cluster.sh up with a small data set in a scratch state
# folder, asks HAProxy for a feed, publishes a second snapshot the way an
# operator does (`publish`: distribute to every frontend's folder, then
# redis-load), waits until both frontends serve it, and brings everything
# down again, also when a step fails. Needs what local-cluster.sh needs
# (redis-server, redis-cli, haproxy) and curl.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z ${FEED_BIN:-} ]]; then
    # Built now, so that what is checked is this tree's default build.
    cargo build -p feed-server --locked
    FEED_BIN=target/debug/feed-server
fi
export FEED_BIN
export USERS=${USERS:-2000}
STATE_DIR=$(mktemp -d)/cluster
export STATE_DIR
trap 'deploy/local-cluster.sh down >/dev/null 2>&1 || true; rm -rf "$(dirname "$STATE_DIR")"' EXIT

say() { printf 'check-local-cluster: %s\n' "$*" >&2; }

# The data version the frontend whose admin port is $1 serves.
served() {
    curl -fsS "http://127.0.0.1:$1/metrics" | awk '$1 == "feed_storage_data_version" { print $2 + 0 }'
}

deploy/local-cluster.sh up
answer=$(curl -fsS 'http://127.0.0.1:18800/feed/1?size=5')
say "through HAProxy: $answer"
[[ $(tr -cd ',' <<<"$answer" | wc -c) == 4 ]] || { say "expected 5 items"; exit 1; }

FEED__DATA__USERS=$((USERS + 1000)) FEED__DATA__SEED=2 \
    "$FEED_BIN" import --synthetic --output "$STATE_DIR/next.ffs" >/dev/null
deploy/local-cluster.sh publish "$STATE_DIR/next.ffs"
for admin in 18901 18902; do
    for _ in $(seq 100); do
        [[ $(served "$admin") == 2 ]] && break
        sleep 0.1
    done
    [[ $(served "$admin") == 2 ]] || { say "the frontend on admin port $admin does not serve version 2"; exit 1; }
done
answer=$(curl -fsS "http://127.0.0.1:18800/feed/$((USERS + 500))?size=3")
say "version 2 through HAProxy: $answer"
[[ $(tr -cd ',' <<<"$answer" | wc -c) == 2 ]] || { say "expected 3 items"; exit 1; }
deploy/local-cluster.sh down
say "ok"
