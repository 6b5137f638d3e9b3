#!/usr/bin/env bash
# Pools the pinned wrk runs of one or more results files of
# `benchmark/run.sh --pinned` (or --isolated), keeps the undisturbed ones,
# and prints their medians and ranges for feed and floor as markdown.
#
#   benchmark/pinned-clean.sh [--max-else PCT] RESULTS.json...
#
# A run is undisturbed when anything but the server (other processes, and
# the interrupts that came meanwhile) took at most PCT% (default 5) of the
# server's CPU during it: busy ticks of that CPU in /proc/stat, less the
# server process's utime + stime, over all ticks. On a machine shared with
# other work, one run's rounds are too few to say much and too often
# disturbed; several runs pooled this way say more. The ratios are of the
# medians (not medians of per-round ratios, as feed-report gives: the
# undisturbed feed and floor runs are not always neighbours).
#
# Reads files only; starts nothing.
set -euo pipefail

max_else=5
files=()
while (($#)); do
    case $1 in
        --max-else) max_else=$2; shift ;;
        -h | --help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "pinned-clean.sh: unknown option $1" >&2; exit 2 ;;
        *) files+=("$1") ;;
    esac
    shift
done
((${#files[@]})) || { echo "usage: benchmark/pinned-clean.sh [--max-else PCT] RESULTS.json..." >&2; exit 2; }
[[ $max_else =~ ^[0-9]+$ ]] || { echo "pinned-clean.sh: --max-else takes a whole percentage" >&2; exit 2; }
command -v jq >/dev/null || { echo "pinned-clean.sh: jq is missing (apt-get install -y jq)" >&2; exit 1; }

jq -rn --argjson max_else "$max_else" '
    def median: sort | if length == 0 then null
        elif length % 2 == 1 then .[length / 2 | floor]
        else (.[length / 2 - 1] + .[length / 2]) / 2 end;
    def fmt(d): if . == null then "n/a" else (. * pow(10; d) | round / pow(10; d) | tostring) end;
    def thousands: tostring | explode | map([.] | implode) | reverse
        | [range(0; length) as $i | .[$i] + (if $i > 0 and $i % 3 == 0 then "," else "" end)]
        | reverse | join("");
    def rate: if . == null then "n/a" else (round | thousands) end;
    def ratio(a; b): if a == null or b == null or b == 0 then "n/a" else (a / b | fmt(2)) end;
    [inputs | (.pinned // {runs: []}).runs[] | select(.wrk.server_cpu.core != null) |
        .wrk.server_cpu as $c |
        {target, rps: (.wrk.requests * 1e6 / .wrk.duration_us),
         p50: .wrk.latency_us.p50, p99: .wrk.latency_us.p99,
         cpu: (($c.utime_ticks + $c.stime_ticks) / $c.clk_tck * 1e6 / .wrk.requests),
         else: (($c.core.busy_ticks - $c.utime_ticks - $c.stime_ticks) * 100 / $c.core.total_ticks)}] as $all |
    ($all | map(select(.else <= $max_else))) as $clean |
    def stats(t; f): [$clean[] | select(.target == t) | f];
    def cell(t; f; show): stats(t; f) as $v |
        "\($v | median | show) (\($v | min | show) to \($v | max | show))";
    "Pinned runs with at most \($max_else)% of the server CPU taken by anything else: " +
    "feed \(stats("feed"; 1) | length) of \([$all[] | select(.target == "feed")] | length), " +
    "floor \(stats("floor"; 1) | length) of \([$all[] | select(.target == "floor")] | length). " +
    "Median (lowest to highest):\n",
    "| | req/s | p50 | p99 | server CPU per request |",
    "|---|---:|---:|---:|---:|",
    "| feed | \(cell("feed"; .rps; rate)) | \(cell("feed"; .p50; rate)) µs | \(cell("feed"; .p99; rate)) µs | \(cell("feed"; .cpu; fmt(2))) µs |",
    "| floor | \(cell("floor"; .rps; rate)) | \(cell("floor"; .p50; rate)) µs | \(cell("floor"; .p99; rate)) µs | \(cell("floor"; .cpu; fmt(2))) µs |",
    "| **feed/floor** (of the medians) | \(ratio(stats("feed"; .rps) | median; stats("floor"; .rps) | median)) | \(ratio(stats("feed"; .p50) | median; stats("floor"; .p50) | median)) | \(ratio(stats("feed"; .p99) | median; stats("floor"; .p99) | median)) | \(ratio(stats("feed"; .cpu) | median; stats("floor"; .cpu) | median)) |"
' "${files[@]}"
