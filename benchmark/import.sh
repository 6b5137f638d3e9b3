#!/usr/bin/env bash
# Runs one `feed-server import` under /usr/bin/time -v and reports its peak
# resident memory, wall time and rows/s, against the importer's memory bound
# of 1 GiB + 24 bytes per user (docs/BENCHMARKS.md, "Import: bounded memory").
#
#   benchmark/import.sh [--bin PATH] -- IMPORT-ARGS...
#   benchmark/import.sh --bin target/release/feed-server -- \
#       --input /data/feeds.parquet --output /data/feeds.snap
#
# --bin defaults to target/release/feed-server (built by cargo build --release).
# The import's own output (the summary) is kept in $REPORT_DIR (default: a
# temporary folder) as import.out and time.txt.
set -euo pipefail

bin=target/release/feed-server
while (($#)); do
    case "$1" in
        --bin) bin="$2"; shift 2 ;;
        --) shift; break ;;
        *) echo "usage: $0 [--bin PATH] -- IMPORT-ARGS..." >&2; exit 2 ;;
    esac
done
(($#)) || { echo "usage: $0 [--bin PATH] -- IMPORT-ARGS..." >&2; exit 2; }
[[ -x /usr/bin/time ]] || { echo "$0: needs /usr/bin/time (apt-get install time)" >&2; exit 2; }

report=${REPORT_DIR:-$(mktemp -d)}
mkdir -p "$report"
status=0
/usr/bin/time -v -o "$report/time.txt" "$bin" import "$@" >"$report/import.out" 2>"$report/import.err" || status=$?
cat "$report/import.out"
if ((status != 0)); then
    echo "import failed (exit $status):" >&2
    tail -n 5 "$report/import.err" >&2
    exit "$status"
fi

peak_kib=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$report/time.txt")
wall=$(awk -F': ' '/Elapsed \(wall clock\) time/ {print $2}' "$report/time.txt")
seconds=$(echo "$wall" | awk -F: '{ if (NF == 3) print $1 * 3600 + $2 * 60 + $3; else print $1 * 60 + $2 }')
rows=$(sed -n 's/^read \([0-9]*\) rows.*/\1/p' "$report/import.out" | head -n 1)
users=$(sed -n 's/^\([0-9]*\) users, .*/\1/p' "$report/import.out" | head -n 1)
bound=$(( (1 << 30) + 24 * users ))
peak=$(( peak_kib * 1024 ))
awk -v peak="$peak" -v bound="$bound" -v s="$seconds" -v rows="$rows" -v users="$users" -v wall="$wall" 'BEGIN {
    printf "peak RSS     %.0f MiB (%.0f bytes)\n", peak / 1048576, peak
    printf "bound        %.0f MiB (1 GiB + 24 B x %d users)\n", bound / 1048576, users
    printf "wall time    %s (%.1f s)\n", wall, s
    printf "rows/s       %.0f (whole command, reading to renamed snapshot)\n", (s > 0 ? rows / s : 0)
    printf "within bound %s\n", (peak <= bound ? "yes" : "NO")
}'
