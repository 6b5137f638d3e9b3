#!/usr/bin/env bash
# Runs one `feed-server export-delivered` under /usr/bin/time -v and reports
# its peak resident memory (all of it, and the anonymous part: the file
# pages of the mapped snapshot count in the first and are the page cache's),
# its wall time and users/s (docs/BENCHMARKS.md, "Export of delivered items").
#
#   benchmark/export.sh [--bin PATH] -- EXPORT-ARGS...
#   FEED__DATA__SOURCE=snapshot FEED__DATA__SNAPSHOT=/data/s5m.snap \
#   FEED__PROGRESS__PATH=/data/progress FEED__ADMIN__PORT=0 \
#       benchmark/export.sh --bin target/release/feed-server -- --output /data/delivered.parquet
#
# The anonymous peak is sampled from /proc every 50 ms (a measurement, so a
# short peak between samples may be missed; the total peak is the kernel's).
set -euo pipefail

bin=target/release/feed-server
while (($#)); do
    case "$1" in
        --bin) bin="$2"; shift 2 ;;
        --) shift; break ;;
        *) echo "usage: $0 [--bin PATH] -- EXPORT-ARGS..." >&2; exit 2 ;;
    esac
done
[[ -x /usr/bin/time ]] || { echo "$0: needs /usr/bin/time (apt-get install time)" >&2; exit 2; }

report=${REPORT_DIR:-$(mktemp -d)}
mkdir -p "$report"
/usr/bin/time -v -o "$report/time.txt" "$bin" export-delivered "$@" >"$report/export.out" 2>"$report/export.err" &
timer=$!
anon_peak=0
while kill -0 "$timer" 2>/dev/null; do
    child=$(pgrep -P "$timer" | head -n 1 || true)
    if [[ -n "$child" ]]; then
        anon=$(awk '/^RssAnon:/ {print $2}' "/proc/$child/status" 2>/dev/null || echo 0)
        ((${anon:-0} > anon_peak)) && anon_peak=$anon
    fi
    sleep 0.05
done
status=0
wait "$timer" || status=$?
cat "$report/export.out"
if ((status != 0)); then
    echo "export failed (exit $status):" >&2
    tail -n 5 "$report/export.err" >&2
    exit "$status"
fi
peak_kib=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$report/time.txt")
wall=$(awk -F': ' '/Elapsed \(wall clock\) time/ {print $2}' "$report/time.txt")
seconds=$(echo "$wall" | awk -F: '{ if (NF == 3) print $1 * 3600 + $2 * 60 + $3; else print $1 * 60 + $2 }')
users=$(sed -n 's/.*: \([0-9]*\) users with progress.*/\1/p' "$report/export.out" | head -n 1)
awk -v peak="$peak_kib" -v anon="$anon_peak" -v s="$seconds" -v users="$users" -v wall="$wall" 'BEGIN {
    printf "peak RSS       %.0f MiB (file pages of the snapshot included)\n", peak / 1024
    printf "peak RssAnon   %.0f MiB (sampled every 50 ms)\n", anon / 1024
    printf "wall time      %s (%.1f s)\n", wall, s
    printf "users/s        %.0f (whole command, snapshot verification included)\n", (s > 0 ? users / s : 0)
}'
