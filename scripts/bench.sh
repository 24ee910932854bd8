#!/usr/bin/env bash
# Every benchmark, one table. Builds only the benchmark targets of the release preset
# (RelWithDebInfo, build/release), then runs, in this order:
#
#   loadgen         storage bound, ingest (1/10/100 tablets), initial village pull, live
#                   fan-out (1,000 tablets), idle connections (1,000 and 10,000 tablets), each
#                   against a real fieldsync-server on 127.0.0.1, port 0, a fresh data folder
#   bench_protocol  join records/s, canonical encode/decode MB/s (Google Benchmark)
#   protocol_counts instructions per call of the protocol's hot paths, under callgrind
#   sdk_footprint   the SDK replica's RSS, disk size and write latency with 50,000 households
#
# and prints one table: figure, value, bound (a bound measured in the same run, or a target),
# ratio (value / bound). A few minutes on 2 cores. See BENCHMARKS.md for the method.
#
# Usage:   scripts/bench.sh [loadgen options...]     e.g. --scenarios ingest --tablets 100
# Env:     FIELDSYNC_BENCH_FOOTPRINT_COUNT   households for sdk_footprint (default 50000)
#          FIELDSYNC_BUILD_LOCK              lock file serialising builds (default
#                                            /tmp/fieldsync-build.lock)
#          FIELDSYNC_BENCH_OUT               where to keep the raw results (default
#                                            build/release/bench-results)
# Exit status: 0 when every benchmark ran (targets may still be missed: read the table).
set -euo pipefail
cd "$(dirname "$0")/.."

build=build/release
lock="${FIELDSYNC_BUILD_LOCK:-/tmp/fieldsync-build.lock}"
count="${FIELDSYNC_BENCH_FOOTPRINT_COUNT:-50000}"
out="${FIELDSYNC_BENCH_OUT:-$build/bench-results}"

if [ ! -f "$build/build.ninja" ]; then
    flock "$lock" cmake --preset release >/dev/null
fi
flock "$lock" ninja -C "$build" -j2 loadgen bench_protocol protocol_counts sdk_footprint \
    fieldsync-server >/dev/null

mkdir -p "$out"
results="$out/results.tsv"
: >"$results"

echo "== machine" >&2
{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
    echo "nproc: $(nproc)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')"
    echo "os: $(. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME"), kernel $(uname -r)"
    echo "memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
    echo "server: $("$build/bin/fieldsync-server" --version 2>&1)"
} >"$out/machine.txt"

echo "== loadgen (storage, ingest, pull, fan-out, connections)" >&2
"$build/bin/loadgen" --dir "$out/loadgen-data" "$@" | tee "$out/loadgen.txt" |
    grep '^RESULT' | cut -f2- >>"$results"

echo "== bench_protocol" >&2
"$build/bin/bench_protocol" --benchmark_format=json --benchmark_min_time=0.5 \
    >"$out/bench_protocol.json" 2>"$out/bench_protocol.err"
# The JSON reporter writes one key per line: "name", then its counters.
awk '
    /"name":/             { name = $2; gsub(/[",]/, "", name) }
    /"items_per_second":/ { items[name] = $2 + 0 }
    /"bytes_per_second":/ { bytes[name] = $2 + 0 }
    END {
        printf "merge: join of diverged copies (review conflicts)\t%.0f\trecords/s\t\t\n", items["BM_JoinHousehold/converged:0"]
        printf "merge: join of equal copies\t%.0f\trecords/s\t\t\n", items["BM_JoinHousehold/converged:1"]
        printf "merge: canonical encode\t%.1f\tMB/s\t\t\n", bytes["BM_EncodeHousehold"] / 1e6
        printf "merge: decode + invariant check\t%.1f\tMB/s\t\t\n", bytes["BM_DecodeHousehold"] / 1e6
    }
' "$out/bench_protocol.json" >>"$results"

echo "== protocol_counts under callgrind" >&2
# Each hot path is one callgrind dump named after it ("desc: Trigger: Client Request: NAME"),
# holding `iterations` calls; its "summary:" line is the instructions executed.
iterations=200
rm -rf "$out/callgrind"
mkdir -p "$out/callgrind"
if command -v valgrind >/dev/null 2>&1; then
    valgrind --tool=callgrind --callgrind-out-file="$out/callgrind/callgrind.out" \
        "$build/bin/protocol_counts" --iterations "$iterations" \
        >"$out/protocol_counts.txt" 2>"$out/protocol_counts.err"
    for f in "$out"/callgrind/callgrind.out.*; do
        awk -v n="$iterations" '
            /^desc: Trigger: Client Request:/ { name = $NF }
            /^summary:/                       { ir = $2 }
            END { if (name != "") printf "callgrind: %s, instructions per call\t%.0f\tinstructions\t\t\n", name, ir / n }
        ' "$f"
    done >>"$results"
else
    echo "bench.sh: valgrind is not installed (scripts/install-deps.sh): no instruction counts" >&2
fi

echo "== sdk_footprint --count $count" >&2
"$build/bin/sdk_footprint" --count "$count" | tee "$out/sdk_footprint.txt" >&2
awk -v n="$count" '
    /^VmRSS after writing:/ { printf "SDK: replica RSS with %d households\t%.1f\tMiB\t64 (target)\t%.2f\n", n, $4 / 1024, $4 / 1024 / 64 }
    /^VmHWM/                { printf "SDK: peak RSS (VmHWM)\t%.1f\tMiB\t\t\n", $4 / 1024 }
    /^households created:/  { ms = $7; gsub(/[(]/, "", ms); printf "SDK: durable write (create), mean\t%.2f\tms\t\t\n", ms + 0 }
    /^write latency p50:/   { printf "SDK: durable write (create), p50\t%.2f\tms\t\t\n", $4 }
    /^write latency p99:/   { printf "SDK: durable write (create), p99\t%.2f\tms\t\t\n", $4 }
    /^database on disk:/    { printf "SDK: database file\t%.1f\tMiB\t\t\n", $4 / 1024 }
' "$out/sdk_footprint.txt" >>"$results"
# The static library as built (RelWithDebInfo: mostly debug info) and without debug info.
lib="$build/sdk/libfieldsync_sdk.a"
if [ -f "$lib" ]; then
    strip --strip-debug -o "$out/libfieldsync_sdk.stripped.a" "$lib"
    awk -v b="$(stat -c %s "$out/libfieldsync_sdk.stripped.a")" \
        'BEGIN { printf "SDK: libfieldsync_sdk.a, debug info stripped\t%.1f\tMiB\t\t\n", b / 1048576 }' >>"$results"
fi

echo
cat "$out/machine.txt"
echo
awk -F'\t' '
    BEGIN { printf "| %-72s | %14s | %-10s | %-14s | %6s |\n", "figure", "value", "unit", "bound", "ratio"
            printf "|%s|%s|%s|%s|%s|\n", "--------------------------------------------------------------------------",
                   "----------------", "------------", "----------------", "--------" }
    { printf "| %-72s | %14s | %-10s | %-14s | %6s |\n", $1, $2, $3, $4, $5 }
' "$results" | tee "$out/table.md"
